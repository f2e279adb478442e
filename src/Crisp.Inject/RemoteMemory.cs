using Crisp.Native;

namespace Crisp.Inject;

/// <summary>
/// Reading and writing another process's memory. process_vm_readv/writev take up to
/// IOV_MAX (1024) ranges per call, so big batches cost one syscall per 1024 ranges.
/// process_vm_writev respects page protection (EFAULT on read-only pages); <see cref="ProcMem"/>
/// (pwrite on /proc/PID/mem) does not. None of this needs ptrace or the ptrace thread.
/// </summary>
public static unsafe class RemoteMemory
{
    /// <summary>Reads exactly dest.Length bytes from <paramref name="address"/>.</summary>
    public static void Read(int pid, ulong address, Span<byte> dest) =>
        ReadBatch(pid, [new RemoteRange(address, dest.Length)], dest);

    /// <summary>
    /// Reads the ranges, in order, into <paramref name="dest"/> back to back (its length must be
    /// at least the sum). Throws SyscallException naming the first address that could not be read.
    /// </summary>
    public static void ReadBatch(int pid, ReadOnlySpan<RemoteRange> ranges, Span<byte> dest)
    {
        fixed (byte* p = dest) Transfer(pid, ranges, p, dest.Length, write: false);
    }

    public static void Write(int pid, ulong address, ReadOnlySpan<byte> data) =>
        WriteBatch(pid, [new RemoteRange(address, data.Length)], data);

    /// <summary>Writes consecutive slices of <paramref name="src"/> to the ranges.</summary>
    public static void WriteBatch(int pid, ReadOnlySpan<RemoteRange> ranges, ReadOnlySpan<byte> src)
    {
        fixed (byte* p = src) Transfer(pid, ranges, p, src.Length, write: true);
    }

    private static void Transfer(int pid, ReadOnlySpan<RemoteRange> ranges, byte* lbase, long localLength, bool write)
    {
        const int max = LibC.IOV_MAX;
        var liov = stackalloc LibC.iovec[1];
        var riov = new LibC.iovec[Math.Min(max, Math.Max(ranges.Length, 1))];
        fixed (LibC.iovec* r = riov)
        {
            long localOff = 0;
            int i = 0;
            ulong skip = 0; // bytes of ranges[i] already done
            while (i < ranges.Length)
            {
                int n = 0;
                long total = 0;
                for (int j = i; j < ranges.Length && n < max; j++, n++)
                {
                    ulong off = j == i ? skip : 0;
                    r[n] = new LibC.iovec((nint)(ranges[j].Address + off), (nuint)((ulong)ranges[j].Length - off));
                    total += ranges[j].Length - (long)off;
                }
                if (localOff + total > localLength) throw new ArgumentException("local buffer too small for the ranges");
                liov[0] = new LibC.iovec((nint)(lbase + localOff), (nuint)total);
                nint got = write
                    ? LibC.process_vm_writev(pid, liov, 1, r, (nuint)n, 0)
                    : LibC.process_vm_readv(pid, liov, 1, r, (nuint)n, 0);
                string call = write ? "process_vm_writev" : "process_vm_readv";
                if (got == -1) throw Errno.Failure(call, $"{pid} at 0x{(ulong)r[0].iov_base:x}");
                if (got == 0 && total > 0) throw new SyscallException(call, Errno.EFAULT, $"{pid} at 0x{(ulong)r[0].iov_base:x}");
                localOff += got;
                // Advance through the ranges by the bytes moved.
                long left = got;
                while (left > 0 && i < ranges.Length)
                {
                    long rem = ranges[i].Length - (long)skip;
                    if (left >= rem) { left -= rem; i++; skip = 0; }
                    else { skip += (ulong)left; left = 0; }
                }
                while (i < ranges.Length && ranges[i].Length == 0) i++;
            }
        }
    }
}
