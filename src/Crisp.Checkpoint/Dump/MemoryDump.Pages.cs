using System.Runtime.InteropServices;
using Crisp.Images;
using Crisp.Images.Pages;
using Crisp.Images.Proto;
using Crisp.Inject;
using Crisp.Native;
using Crisp.Native.ProcFs;
using NativePagemap = Crisp.Native.ProcFs.ProcPagemap;
using PagemapEntry = Crisp.Native.ProcFs.PagemapEntry;

namespace Crisp.Checkpoint.Dump;

/// <summary>The page-copy half of a dump: reading the frozen process's pages in batches and handing them to a sink.</summary>
internal static unsafe partial class MemoryDump
{
    /// <summary>
    /// Reads the runs' bytes from the frozen process and writes them to <paramref name="writer"/>,
    /// in batches of up to <see cref="BatchBytes"/> with one process_vm_readv each. Two buffers
    /// alternate so that reading the next batch overlaps writing the previous one (two copies
    /// that each run near memcpy speed, on two cores). Returns the number of pages written.
    /// </summary>
    public static ulong WritePages(int pid, IReadOnlyList<ScanRun> runs, IDumpPagemap writer, bool lazy = false)
    {
        var buffers = new[] { (nint)NativeMemory.AlignedAlloc(BatchBytes, PageSize), (nint)NativeMemory.AlignedAlloc(BatchBytes, PageSize) };
        Task? writing = null;
        try
        {
            var ranges = new List<RemoteRange>();
            var pieces = new List<ScanRun>();
            ulong total = 0;
            int used = 0, current = 0;
            void Flush()
            {
                if (pieces.Count == 0) return;
                byte* buffer = (byte*)buffers[current];
                if (ranges.Count > 0) ReadRanges(pid, ranges, new Span<byte>(buffer, used));
                writing?.GetAwaiter().GetResult();
                var batch = pieces.ToArray();
                writing = Task.Run(() =>
                {
                    long off = 0;
                    foreach (var p in batch)
                    {
                        if ((p.Flags & PagemapFlags.Parent) != 0)
                        {
                            writer.WriteParent(p.Vaddr, (ulong)p.Pages); // in the parent images: no bytes read
                            continue;
                        }
                        if ((p.Flags & PagemapFlags.Present) == 0)
                        {
                            writer.WriteLazy(p.Vaddr, (ulong)p.Pages); // a lazy run: no bytes read
                            continue;
                        }
                        int len = p.Pages * PageSize;
                        writer.Write(p.Vaddr, new ReadOnlySpan<byte>(buffer + off, len), p.Flags);
                        off += len;
                    }
                });
                current ^= 1;
                ranges.Clear();
                pieces.Clear();
                used = 0;
            }
            foreach (var run in runs)
            {
                if ((run.Flags & PagemapFlags.Parent) != 0)
                {
                    pieces.Add(run);
                    continue;
                }
                if (lazy && (run.Flags & PagemapFlags.Lazy) != 0)
                {
                    // Kept in order with the data pieces around it; the page server reads it later.
                    pieces.Add(new ScanRun(run.Vaddr, run.Pages, PagemapFlags.Lazy));
                    continue;
                }
                ulong vaddr = run.Vaddr;
                int left = run.Pages;
                while (left > 0)
                {
                    int room = (BatchBytes - used) / PageSize;
                    if (room == 0 || ranges.Count == LibC.IOV_MAX) { Flush(); continue; }
                    int take = Math.Min(room, left);
                    ranges.Add(new RemoteRange(vaddr, take * PageSize));
                    pieces.Add(new ScanRun(vaddr, take, run.Flags));
                    used += take * PageSize;
                    total += (ulong)take;
                    vaddr += (ulong)take * PageSize;
                    left -= take;
                }
            }
            Flush();
            writing?.GetAwaiter().GetResult();
            writing = null;
            return total;
        }
        finally
        {
            // A failed read must not free a buffer the writer still uses.
            try { writing?.GetAwaiter().GetResult(); } catch (Exception e) { Log.D($"page write after failure: {e.Message}"); }
            NativeMemory.AlignedFree((void*)buffers[0]);
            NativeMemory.AlignedFree((void*)buffers[1]);
        }
    }

    /// <summary>
    /// process_vm_readv honours page protection: pages of a PROT_NONE (or write-only) VMA that
    /// hold data fail it with EFAULT (zdtm maps04). /proc/PID/mem reads them as the kernel's
    /// ptrace access does, regardless of protection; CRIU's parasite mprotects such VMAs instead.
    /// </summary>
    private static void ReadRanges(int pid, List<RemoteRange> ranges, Span<byte> dest)
    {
        try
        {
            RemoteMemory.ReadBatch(pid, CollectionsMarshal.AsSpan(ranges), dest);
            return;
        }
        catch (SyscallException e) when (e.Is(Errno.EFAULT)) { }
        using var mem = new ProcMem(pid, writable: false);
        int off = 0;
        foreach (var r in ranges)
        {
            mem.Read(r.Address, dest.Slice(off, r.Length));
            off += r.Length;
        }
    }

    /// <summary>The PFN of the kernel's shared zero page, seen through our own pagemap.</summary>
    private static ulong FindZeroPfn()
    {
        nint page = LibC.mmap(0, PageSize, LibC.PROT_READ, LibC.MAP_PRIVATE | LibC.MAP_ANONYMOUS, -1, 0);
        if (page == LibC.MAP_FAILED) return 0;
        try
        {
            _ = System.Threading.Volatile.Read(ref *(byte*)page); // a read fault maps the zero page
            using var pm = new NativePagemap(LibC.getpid());
            Span<ulong> e = stackalloc ulong[1];
            pm.Read((ulong)page, e);
            var entry = new PagemapEntry(e[0]);
            return entry.Present ? entry.Pfn : 0;
        }
        finally
        {
            LibC.munmap(page, PageSize);
        }
    }
}
