namespace Crisp.Native;

/// <summary>The restorer's end: the connection to the lazy-pages daemon for one restore.</summary>
public sealed unsafe class LazyHandOffConnection : IDisposable
{
    private const long SYS_connect = 42, SYS_sendto = 44;
    private int _fd;
    public string SocketPath { get; }

    private LazyHandOffConnection(int fd, string path)
    {
        _fd = fd;
        SocketPath = path;
    }

    /// <summary>Connects to <c>lazy-pages.socket</c> in <paramref name="workDir"/>; a clear error if no daemon listens.</summary>
    public static LazyHandOffConnection Connect(string workDir)
    {
        string path = LazyHandOff.SocketPath(workDir);
        var bytes = System.Text.Encoding.UTF8.GetBytes(path);
        if (bytes.Length >= 108) throw new CrispException($"{path}: too long for a unix socket address (108 bytes)");
        int fd = (int)Errno.CheckRaw(LibC.Syscall(LibC.SYS_socket, LibC.AF_UNIX, LibC.SOCK_STREAM | LibC.SOCK_CLOEXEC, 0), "socket", "AF_UNIX");
        byte* addr = stackalloc byte[110];
        new Span<byte>(addr, 110).Clear();
        *(ushort*)addr = LibC.AF_UNIX;
        bytes.CopyTo(new Span<byte>(addr + 2, 108));
        long r = Errno.RetryEintrRaw(() => LibC.Syscall(SYS_connect, fd, (long)addr, 2 + bytes.Length + 1));
        if (r < 0)
        {
            LibC.close(fd);
            throw new CrispException($"no lazy-pages daemon listening on {path} (connect: {Errno.Name((int)-r)}); start `crisp lazy-pages -D DIR` first");
        }
        return new LazyHandOffConnection(fd, path);
    }

    /// <summary>Sends one task: its pid, then its uffd with a one-byte payload.</summary>
    public void Send(int pid, int uffd)
    {
        SendWord((uint)pid, $"pid {pid}");
        FdPassing.Send(_fd, [0], uffd, $"{SocketPath}: uffd of {pid}");
    }

    /// <summary>The last word: every task has been handed over.</summary>
    public void Finish() => SendWord(LazyHandOff.RestoreFinished, "restore-finished");

    private void SendWord(uint value, string what)
    {
        uint v = value;
        byte* b = (byte*)&v;
        int off = 0;
        while (off < 4)
        {
            long n = Errno.RetryEintrRaw(() => LibC.Syscall(SYS_sendto, _fd, (long)(b + off), 4 - off, LibC.MSG_NOSIGNAL, 0, 0));
            if (n <= 0) throw new CrispException($"{SocketPath}: sending {what} failed ({Errno.Name((int)-n)}): did the lazy-pages daemon exit?");
            off += (int)n;
        }
    }

    public void Dispose()
    {
        if (_fd >= 0) LibC.close(_fd);
        _fd = -1;
    }
}
