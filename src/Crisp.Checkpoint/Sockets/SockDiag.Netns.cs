using Crisp.Checkpoint.Net;
using Crisp.Native;

namespace Crisp.Checkpoint.Sockets;

/// <summary>
/// sock_diag answers for the namespace its netlink socket was made in. For a tree that owns its
/// network namespace the dump makes that socket inside the tree's (NetnsDump); the choice is per
/// thread (the dump collects sockets on its calling thread), so parallel dumps do not mix.
/// </summary>
internal static partial class SockDiag
{
    [ThreadStatic] private static int? _netnsFd;

    /// <summary>Until disposed, this thread's sock_diag queries go to the namespace of <paramref name="netnsFd"/>.</summary>
    public static Scope InNamespace(int netnsFd)
    {
        var previous = _netnsFd;
        _netnsFd = netnsFd;
        return new Scope(previous);
    }

    public readonly struct Scope(int? previous) : IDisposable
    {
        public void Dispose() => _netnsFd = previous;
    }

    private static int OpenDiagSocket(int protocol, string what)
    {
        int Open() => Errno.Check(LibC.socket(LibC.AF_NETLINK, LibC.SOCK_RAW | LibC.SOCK_CLOEXEC, protocol), "socket(AF_NETLINK, NETLINK_SOCK_DIAG)", what);
        return _netnsFd is int fd ? NamespaceThread.Run($"/proc/self/fd/{fd}", NetTool.CLONE_NEWNET, Open) : Open();
    }
}
