using Crisp.Native;

namespace Crisp.LazyPages;

/// <summary>The uffd ioctls the daemon issues, with the kernel's result conventions sorted out.</summary>
public static unsafe class Uffd
{
    private static FillResult Sort(int rc, long reported, ulong len)
    {
        if (rc == 0) return new FillResult(FillStatus.Ok, (long)len, 0);
        int errno = Errno.Last;
        if (reported > 0) return new FillResult(FillStatus.Partial, reported, errno);
        if (reported < 0) errno = (int)-reported;
        return errno switch
        {
            Errno.EEXIST => new FillResult(FillStatus.Exists, 0, errno),
            Errno.EAGAIN => new FillResult(FillStatus.Again, 0, errno),
            Errno.ESRCH or Errno.ENOSPC => new FillResult(FillStatus.Gone, 0, errno),
            Errno.ENOENT => new FillResult(FillStatus.NoVma, 0, errno),
            _ => new FillResult(FillStatus.Failed, 0, errno),
        };
    }

    public static FillResult Copy(int uffd, ulong dst, void* src, ulong len, bool dontWake = false)
    {
        var c = new LibC.uffdio_copy { dst = dst, src = (ulong)src, len = len, mode = dontWake ? LibC.UFFDIO_COPY_MODE_DONTWAKE : 0 };
        int rc = LibC.ioctl(uffd, LibC.UFFDIO_COPY, &c);
        return Sort(rc, c.copy, len);
    }

    public static FillResult ZeroPage(int uffd, ulong start, ulong len)
    {
        var z = new LibC.uffdio_zeropage { range = new LibC.uffdio_range { start = start, len = len } };
        int rc = LibC.ioctl(uffd, LibC.UFFDIO_ZEROPAGE, &z);
        return Sort(rc, z.zeropage, len);
    }

    public static FillResult Poison(int uffd, ulong start, ulong len)
    {
        var p = new LibC.uffdio_poison { range = new LibC.uffdio_range { start = start, len = len } };
        int rc = LibC.ioctl(uffd, LibC.UFFDIO_POISON, &p);
        return Sort(rc, p.updated, len);
    }

    /// <summary>Wakes threads waiting on [start, start+len); used after an EEXIST answer to a fault.</summary>
    public static void Wake(int uffd, ulong start, ulong len)
    {
        var r = new LibC.uffdio_range { start = start, len = len };
        LibC.ioctl(uffd, LibC.UFFDIO_WAKE, &r); // best effort: a wake with no waiter is harmless
    }
}
