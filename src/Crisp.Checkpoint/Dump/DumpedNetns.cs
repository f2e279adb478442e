using Crisp.Checkpoint.Net;
using Crisp.Checkpoint.Sockets;
using Crisp.Images;
using Crisp.Inject;
using Crisp.Native;

namespace Crisp.Checkpoint.Dump;

/// <summary>
/// A dump of a tree that owns its network namespace, from the freeze to the images: the namespace
/// is read first (before the network lock adds its table), then for the rest of the collection the
/// lock is the whole namespace (NetworkLock.Namespace.cs) and sock_diag asks that namespace
/// (SockDiag.Netns.cs). Disposing lets go of both; the lock itself is the dump's to keep or release.
/// </summary>
internal sealed class DumpedNetns : IDisposable
{
    private readonly int _fd;
    private readonly NetnsImages _images;
    private SockDiag.Scope _scope;

    private DumpedNetns(int fd, NetnsImages images)
    {
        _fd = fd;
        _images = images;
    }

    /// <summary>Null when the tree shares crisp's namespace; otherwise the namespace read, or a refusal naming what crisp cannot make again.</summary>
    public static DumpedNetns? Begin(SeizedTree tree, TreeNamespaces ns, TcpRepairDump? tcp)
    {
        if (!ns.OwnNet) return null;
        int root = tree.Root.Pid;
        NetnsDump.CheckNotShared(root, tree.Processes.Select(p => p.Pid).ToHashSet());
        string path = $"/proc/{root}/ns/net";
        int fd = Errno.Check(LibC.open(path, LibC.O_RDONLY | LibC.O_CLOEXEC, 0), "open", path);
        try
        {
            var d = new DumpedNetns(fd, NetnsDump.Dump(root, fd));
            tcp?.Lock.UseNamespace(fd);
            d._scope = SockDiag.InNamespace(fd);
            return d;
        }
        catch
        {
            LibC.close(fd);
            throw;
        }
    }

    public void Write(ImageDir dir, uint netNsId) => _images.Write(dir, netNsId);

    public void Dispose()
    {
        _scope.Dispose();
        LibC.close(_fd);
    }
}
