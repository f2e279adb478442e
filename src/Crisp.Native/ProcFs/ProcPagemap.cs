namespace Crisp.Native.ProcFs;

/// <summary>Reads /proc/PID/pagemap in big pread batches.</summary>
public sealed unsafe class ProcPagemap : IDisposable
{
    private readonly int _fd;
    private readonly string _path;

    public ProcPagemap(int pid)
    {
        _path = $"/proc/{pid}/pagemap";
        _fd = Errno.Check(LibC.open(_path, LibC.O_RDONLY | LibC.O_CLOEXEC, 0), "open", _path);
    }

    /// <summary>Fills <paramref name="entries"/> with the entries of the pages from <paramref name="start"/> (page aligned).</summary>
    public void Read(ulong start, Span<ulong> entries)
    {
        long offset = (long)(start >> LibC.PageShift) * 8;
        int done = 0;
        fixed (ulong* p = entries)
        {
            while (done < entries.Length)
            {
                nint n = Errno.Check(LibC.pread(_fd, (byte*)(p + done), (nuint)(entries.Length - done) * 8, offset + done * 8L), "pread", _path);
                if (n == 0) throw new SyscallException("pread", Errno.EIO, _path + ": short read");
                done += (int)(n / 8);
            }
        }
    }

    /// <summary>Entries for [start, end) in one array.</summary>
    public ulong[] Read(ulong start, ulong end)
    {
        var a = new ulong[(end - start) >> LibC.PageShift];
        Read(start, a);
        return a;
    }

    public void Dispose() => LibC.close(_fd);
}
