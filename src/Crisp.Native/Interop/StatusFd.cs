namespace Crisp.Native;

/// <summary>
/// CRIU's <c>--status-fd</c> convention, both ends: the side that becomes ready writes one zero
/// byte and closes the fd; the side that waits reads one byte and takes an end without it (the
/// writer exited or closed early) as "never became ready".
/// </summary>
public static unsafe class StatusFd
{
    /// <summary>Writes the readiness byte to <paramref name="fd"/> and closes it. A negative fd is no status fd: nothing happens.</summary>
    public static void Report(int fd)
    {
        if (fd < 0) return;
        byte* zero = stackalloc byte[1];
        *zero = 0;
        try { Errno.CheckRetry(() => LibC.write(fd, zero, 1), "write", $"status fd {fd}"); }
        finally { LibC.close(fd); }
    }

    /// <summary>Waits for the readiness byte on <paramref name="fd"/>, then closes it. True when the byte came.</summary>
    public static bool Await(int fd)
    {
        byte* b = stackalloc byte[1];
        long n = Errno.RetryEintr(() => LibC.read(fd, b, 1));
        LibC.close(fd);
        return n == 1;
    }
}
