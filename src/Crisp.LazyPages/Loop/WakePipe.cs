using Crisp.Native;

namespace Crisp.LazyPages;

/// <summary>A non-blocking pipe whose read end sits in the poll set: other threads wake the poll loop by writing a byte.</summary>
internal sealed unsafe class WakePipe : IDisposable
{
    public int ReadFd { get; private set; } = -1;
    private int _writeFd = -1;

    public WakePipe()
    {
        int* fds = stackalloc int[2];
        Errno.Check(LibC.pipe2(fds, LibC.O_CLOEXEC | LibC.O_NONBLOCK), "pipe2", "lazy-pages wake pipe");
        ReadFd = fds[0];
        _writeFd = fds[1];
    }

    public void Signal()
    {
        byte one = 1;
        if (_writeFd >= 0) LibC.write(_writeFd, &one, 1); // a full pipe already wakes the loop
    }

    public void Drain()
    {
        byte* b = stackalloc byte[64];
        while (LibC.read(ReadFd, b, 64) > 0) { }
    }

    public void Dispose()
    {
        if (ReadFd >= 0) LibC.close(ReadFd);
        if (_writeFd >= 0) LibC.close(_writeFd);
        ReadFd = _writeFd = -1;
    }
}
