using System.Runtime.ExceptionServices;

namespace Crisp.Native;

/// <summary>
/// Runs code on a fresh thread that first joins a namespace (setns): namespaces of the kinds
/// that are per task (ipc, uts, net, time) can be entered by one thread of a multithreaded
/// process, and the thread ends with the work, so nothing else in crisp is ever moved.
/// </summary>
public static class NamespaceThread
{

    public static T Run<T>(string nsPath, int nstype, Func<T> work)
    {
        T result = default!;
        ExceptionDispatchInfo? failure = null;
        var t = new Thread(() =>
        {
            try
            {
                int fd = Errno.Check(LibC.open(nsPath, LibC.O_RDONLY | LibC.O_CLOEXEC, 0), "open", nsPath);
                try { Errno.Check(LibC.Syscall(LibC.SYS_setns, fd, nstype), "setns", nsPath); }
                finally { LibC.close(fd); }
                result = work();
            }
            catch (Exception e) { failure = ExceptionDispatchInfo.Capture(e); }
        }, 1 << 20) { Name = "crisp-setns", IsBackground = true };
        t.Start();
        t.Join();
        failure?.Throw();
        return result;
    }
}
