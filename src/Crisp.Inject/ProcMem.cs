using Crisp.Native;

namespace Crisp.Inject;

/// <summary>/proc/PID/mem held open: pread/pwrite that ignore page protection (ptrace access mode).</summary>
public sealed unsafe class ProcMem : IDisposable
{
    private readonly int _fd;
    private readonly string _path;

    public ProcMem(int pid, bool writable = true)
    {
        _path = $"/proc/{pid}/mem";
        _fd = Errno.Check(LibC.open(_path, (writable ? LibC.O_RDWR : LibC.O_RDONLY) | LibC.O_CLOEXEC, 0), "open", _path);
    }

    public void Write(ulong address, ReadOnlySpan<byte> data)
    {
        fixed (byte* p = data)
        {
            int done = 0;
            while (done < data.Length)
            {
                nint n = Errno.Check(LibC.pwrite(_fd, p + done, (nuint)(data.Length - done), (long)address + done), "pwrite", $"{_path} at 0x{address + (ulong)done:x}");
                if (n == 0) throw new SyscallException("pwrite", Errno.EIO, $"{_path} at 0x{address + (ulong)done:x}");
                done += (int)n;
            }
        }
    }

    public void Read(ulong address, Span<byte> dest)
    {
        fixed (byte* p = dest)
        {
            int done = 0;
            while (done < dest.Length)
            {
                nint n = Errno.Check(LibC.pread(_fd, p + done, (nuint)(dest.Length - done), (long)address + done), "pread", $"{_path} at 0x{address + (ulong)done:x}");
                if (n == 0) throw new SyscallException("pread", Errno.EIO, $"{_path} at 0x{address + (ulong)done:x}");
                done += (int)n;
            }
        }
    }

    public void Dispose() => LibC.close(_fd);
}
