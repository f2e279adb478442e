using Crisp.Checkpoint.Net;
using Crisp.Checkpoint.Sockets;
using Crisp.Images;
using Crisp.Native;

namespace Crisp.Checkpoint.Restore;

/// <summary>
/// A network namespace the tree owned. Before any socket is made, the restore thread (the
/// ptrace thread) leaves crisp's namespace for a new one (unshare(CLONE_NEWNET) acts on that
/// thread only), which is filled from the images (Net/NetnsRestore.cs) and locked whole if
/// connections come back (NetworkLock.Namespace.cs). The thread stays there to the end of the
/// restore: the sockets it makes, the stub it spawns (and so the root cloned from it, and the
/// tree) are all in the new namespace. It goes back to crisp's when the restore ends either way;
/// on failure the namespace dies with the last task killed, as nothing else holds it.
/// </summary>
internal sealed partial class RestoreSession
{
    private void ReadNetns(uint id)
    {
        if (!NetnsImages.ExistsIn(_c.Dir, id))
            throw new ImageException(_c.Dir.PathOf(NetnsImages.NetnsName(id)), "the tree owned a network namespace but its image is missing");
        _c.NetnsImages = NetnsImages.Read(_c.Dir, id);
    }

    private void CreateNetns()
    {
        const string self = "/proc/thread-self/ns/net";
        _c.CrispNetnsFd = Errno.Check(LibC.open(self, LibC.O_RDONLY | LibC.O_CLOEXEC, 0), "open", self);
        Errno.Check(LibC.Syscall(SYS_unshare, NetTool.CLONE_NEWNET), "unshare(CLONE_NEWNET)", "the restore thread");
        _c.TreeNetnsFd = Errno.Check(LibC.open(self, LibC.O_RDONLY | LibC.O_CLOEXEC, 0), "open", self);
        NetnsRestore.Fill(_c.TreeNetnsFd, _c.NetnsImages!, _c.Dir.Path);
        Log.I($"the tree owned its network namespace: restored in a new one ({string.Join(", ", _c.NetnsImages!.Devices.Select(d => d.Name))}; " +
              $"{string.Join(", ", _c.NetnsImages.Raw.Keys.Where(k => k.Contains("tables", StringComparison.Ordinal)))})");
    }

    /// <summary>For a tree with its own namespace: the whole new namespace is locked instead of each connection. False otherwise.</summary>
    private bool LockNetns(IEnumerable<TcpConnection> connections, NetworkLockMethod method, string runId, bool makeNew)
    {
        if (_c.TreeNetnsFd < 0) return false;
        if (!makeNew) return true;   // --tcp-close: the dump's lock went with its namespace
        _c.NetLock = NetworkLock.ForNamespace(method, runId, _c.TreeNetnsFd);
        foreach (var c in connections) _c.NetLock.Add(c);
        return true;
    }

    /// <summary>The restore thread back in crisp's namespace; crisp lets go of the tree's.</summary>
    private void LeaveNetns()
    {
        if (_c.CrispNetnsFd >= 0)
        {
            try { Errno.Check(LibC.Syscall(LibC.SYS_setns, _c.CrispNetnsFd, NetTool.CLONE_NEWNET), "setns(crisp's network namespace)", "the restore thread"); }
            finally
            {
                LibC.close(_c.CrispNetnsFd);
                _c.CrispNetnsFd = -1;
            }
        }
        if (_c.TreeNetnsFd >= 0) LibC.close(_c.TreeNetnsFd);
        _c.TreeNetnsFd = -1;
    }
}
