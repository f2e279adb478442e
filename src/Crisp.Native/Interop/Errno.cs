using System.Runtime.InteropServices;

namespace Crisp.Native;

/// <summary>The one place where a -1 return turns into an exception.</summary>
public static class Errno
{
    public const int EPERM = 1, ENOENT = 2, ESRCH = 3, EINTR = 4, EIO = 5, ENXIO = 6, E2BIG = 7, EBADF = 9,
        ECHILD = 10, EAGAIN = 11, ENOMEM = 12, EACCES = 13, EFAULT = 14, EBUSY = 16, EEXIST = 17,
        ENODEV = 19, ENOTDIR = 20, EISDIR = 21, EINVAL = 22, ENFILE = 23, EMFILE = 24, ENOTTY = 25,
        EFBIG = 27, ENOSPC = 28, ESPIPE = 29, EPIPE = 32, ERANGE = 34, ENOSYS = 38, ENOTEMPTY = 39,
        ENODATA = 61, EOPNOTSUPP = 95, EADDRINUSE = 98, ECONNRESET = 104, ENOTCONN = 107,
        ETIMEDOUT = 110, ECONNREFUSED = 111, EINPROGRESS = 115;

    // Kernel-internal restart codes a task can be stopped with (seen in rax at a syscall stop).
    public const int ERESTARTSYS = 512, ERESTARTNOINTR = 513, ERESTARTNOHAND = 514, ERESTART_RESTARTBLOCK = 516;

    private static readonly Dictionary<int, string> Names = new()
    {
        [EPERM] = "EPERM", [ENOENT] = "ENOENT", [ESRCH] = "ESRCH", [EINTR] = "EINTR", [EIO] = "EIO",
        [ENXIO] = "ENXIO", [E2BIG] = "E2BIG", [EBADF] = "EBADF", [ECHILD] = "ECHILD", [EAGAIN] = "EAGAIN",
        [ENOMEM] = "ENOMEM", [EACCES] = "EACCES", [EFAULT] = "EFAULT", [EBUSY] = "EBUSY", [EEXIST] = "EEXIST",
        [ENODEV] = "ENODEV", [ENOTDIR] = "ENOTDIR", [EISDIR] = "EISDIR", [EINVAL] = "EINVAL",
        [ENFILE] = "ENFILE", [EMFILE] = "EMFILE", [ENOTTY] = "ENOTTY", [EFBIG] = "EFBIG", [ENOSPC] = "ENOSPC",
        [ESPIPE] = "ESPIPE", [EPIPE] = "EPIPE", [ERANGE] = "ERANGE", [ENOSYS] = "ENOSYS",
        [ENOTEMPTY] = "ENOTEMPTY", [ENODATA] = "ENODATA", [EOPNOTSUPP] = "EOPNOTSUPP",
        [EADDRINUSE] = "EADDRINUSE", [ECONNRESET] = "ECONNRESET", [ENOTCONN] = "ENOTCONN",
        [ETIMEDOUT] = "ETIMEDOUT", [ECONNREFUSED] = "ECONNREFUSED", [EINPROGRESS] = "EINPROGRESS",
        [ERESTARTSYS] = "ERESTARTSYS", [ERESTARTNOINTR] = "ERESTARTNOINTR",
        [ERESTARTNOHAND] = "ERESTARTNOHAND", [ERESTART_RESTARTBLOCK] = "ERESTART_RESTARTBLOCK",
    };

    public static string Name(int errno) => Names.TryGetValue(errno, out var n) ? n : $"errno {errno}";

    public static string Describe(int errno) => errno >= 512 ? "kernel restart code" : Marshal.GetPInvokeErrorMessage(errno);

    /// <summary>Last errno of a LibraryImport with SetLastError = true.</summary>
    public static int Last => Marshal.GetLastPInvokeError();

    /// <summary>
    /// The exception for a call that just failed, with the errno it left: for callers that look at
    /// the errno first (<c>if (Errno.Last != EAGAIN) throw Errno.Failure(...)</c>).
    /// </summary>
    public static SyscallException Failure(string call, string target) => new(call, Last, target);

    /// <summary>Throws if <paramref name="rc"/> is -1, with the errno left by the call.</summary>
    public static long Check(long rc, string call, string target)
    {
        if (rc == -1) throw new SyscallException(call, Last, target);
        return rc;
    }

    public static int Check(int rc, string call, string target)
    {
        if (rc == -1) throw new SyscallException(call, Last, target);
        return rc;
    }

    public static nint Check(nint rc, string call, string target)
    {
        if (rc == -1) throw new SyscallException(call, Last, target);
        return rc;
    }

    /// <summary>
    /// Runs <paramref name="call"/> (a libc call: -1 and errno on failure) again while it fails
    /// with EINTR; returns its last result. The one EINTR loop: callers check the result with
    /// <see cref="Check(long, string, string)"/> or look at <see cref="Last"/>.
    /// </summary>
    public static long RetryEintr(Func<long> call)
    {
        long rc;
        do rc = call();
        while (rc == -1 && Last == EINTR);
        return rc;
    }

    /// <summary><see cref="RetryEintr(Func{long})"/> for raw syscalls, where -EINTR is the result itself.</summary>
    public static long RetryEintrRaw(Func<long> call)
    {
        long rc;
        do rc = call();
        while (rc == -EINTR);
        return rc;
    }

    /// <summary>Retries EINTR, then throws SyscallException if the call failed.</summary>
    public static long CheckRetry(Func<long> call, string name, string target) => Check(RetryEintr(call), name, target);

    /// <summary>For raw results where -4095..-1 encodes -errno (injected syscalls).</summary>
    public static long CheckRaw(long rc, string call, string target)
    {
        if (rc < 0 && rc >= -4095) throw new SyscallException(call, (int)-rc, target);
        return rc;
    }
}
