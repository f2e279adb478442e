namespace Crisp.Native;

/*
 * The lazy-pages hand-off, both ends (CRIU keeps them together in criu/uffd.c; so do we).
 *
 * The daemon listens on a unix stream socket, lazy-pages.socket in the work directory. A restore
 * connects once and sends, for every task whose memory is lazy:
 *
 *   u32 pid        the task's pid as the restorer knows it (a negative pid: a zombie, nothing follows)
 *   uffd           SCM_RIGHTS, in a second message with a one-byte payload (CRIU's form); the
 *                  daemon also takes it attached to the pid's own message
 *
 * and after the last task the word 0x52535446 ("ReSTore Finished"). Values are host byte order.
 *
 * The restorer's end (LazyHandOffConnection) uses raw socket calls rather than System.Net.Sockets:
 * it sits on the path whose time a lazy restore is judged by, and the managed socket stack costs
 * milliseconds to initialise. The daemon's end (LazyHandOff.Receive) reads one message at a time
 * from a connection its poll loop found readable.
 */

/// <summary>The lazy-pages hand-off protocol: its constants and the daemon's reading end.</summary>
public static unsafe class LazyHandOff
{
    public const string SocketName = "lazy-pages.socket";
    /// <summary>"ReSTore Finished": sent after the last task has been handed over.</summary>
    public const uint RestoreFinished = 0x52535446;

    /// <summary>How long the rest of a message that has begun may take.</summary>
    private const int IncompleteMessageMillis = 5000;

    public static string SocketPath(string workDir)
    {
        string path = Path.GetFullPath(Path.Combine(workDir, SocketName));
        // sun_path holds 107 bytes and a NUL; the daemon binds under a temporary name first (".PID.tmp").
        if (System.Text.Encoding.UTF8.GetByteCount(path) + TempSuffixRoom > MaxSocketPath)
            throw new CrispException($"the work directory {Path.GetFullPath(workDir)} is too long for the lazy-pages socket " +
                $"({System.Text.Encoding.UTF8.GetByteCount(path)} bytes with its name; a unix socket path holds at most {MaxSocketPath - TempSuffixRoom} here): choose a shorter -W/--work-dir");
        return path;
    }

    /// <summary>The bytes of sun_path before its NUL.</summary>
    public const int MaxSocketPath = 107;

    /// <summary>Room for the temporary name the daemon binds before the rename (".PID.tmp", a pid of up to 7 digits).</summary>
    public const int TempSuffixRoom = 12;

    /// <summary>
    /// Reads one message from a hand-off connection the caller found readable (the socket may be
    /// non-blocking: .NET keeps sockets so). A descriptor received with a message that carries
    /// none (restore-finished, a zombie, the end of the connection) is closed here.
    /// </summary>
    public static HandOffMessage Receive(int socket, string target)
    {
        byte* word = stackalloc byte[4];
        int got = 0, fd = -1;
        string? problem = null;
        while (got < 4)
        {
            int n = ReceiveSome(socket, new Span<byte>(word + got, 4 - got), ref fd, wait: got > 0, target, ref problem);
            if (n == -2) return new HandOffMessage(HandOffKind.Nothing); // spurious wake-up
            if (n <= 0)
            {
                CloseIfOpen(fd);
                if (got != 0 || n < 0)
                    problem = (problem is null ? "" : problem + "; ") + "hand-off connection closed in the middle of a message";
                return new HandOffMessage(HandOffKind.Closed, Problem: problem);
            }
            got += n;
        }
        uint value = *(uint*)word;
        if (value == RestoreFinished)
        {
            CloseIfOpen(fd);
            return new HandOffMessage(HandOffKind.RestoreFinished);
        }
        int pid = (int)value;
        if (pid <= 0)
        {
            CloseIfOpen(fd);
            return new HandOffMessage(HandOffKind.Zombie, pid); // CRIU sends -pid and no uffd
        }
        if (fd < 0)
        {
            byte dummy;
            int n = ReceiveSome(socket, new Span<byte>(&dummy, 1), ref fd, wait: true, target, ref problem);
            if (n <= 0 || fd < 0)
            {
                CloseIfOpen(fd);
                return new HandOffMessage(HandOffKind.Task, pid, -1, "no uffd came after the pid");
            }
        }
        return new HandOffMessage(HandOffKind.Task, pid, fd);
    }

    /// <summary>
    /// Bytes received, 0 at end of stream, -1 on error or after waiting 5 s, -2 when nothing is
    /// there and <paramref name="wait"/> is false. A received descriptor lands in <paramref name="fd"/>.
    /// </summary>
    private static int ReceiveSome(int socket, Span<byte> buffer, ref int fd, bool wait, string target, ref string? problem)
    {
        for (int attempt = 0; ; attempt++)
        {
            try
            {
                int n = FdPassing.Receive(socket, buffer, out int received, target);
                if (received >= 0)
                {
                    CloseIfOpen(fd);
                    fd = received;
                }
                return n;
            }
            catch (SyscallException e) when (e.Is(Errno.EINTR)) { continue; }
            catch (SyscallException e) when (e.Is(Errno.EAGAIN))
            {
                if (!wait) return -2;
                if (attempt > 0) { problem = "message incomplete after 5 s"; return -1; }
                var pfd = new LibC.PollFd { fd = socket, events = LibC.POLLIN };
                LibC.poll(&pfd, 1, IncompleteMessageMillis);
            }
            catch (SyscallException e)
            {
                problem = $"recvmsg: {Errno.Name(e.Errno)}";
                return -1;
            }
        }
    }

    private static void CloseIfOpen(int fd)
    {
        if (fd >= 0) LibC.close(fd);
    }
}
