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

/// <summary>The page-copy half of a dump: reading the process's pages (frozen; for a pre-dump, running) in batches and handing them to a sink.</summary>
internal static unsafe partial class MemoryDump
{
    /// <summary>
    /// Reads the runs' bytes from the frozen process and writes them to <paramref name="writer"/>,
    /// in batches of up to <see cref="BatchBytes"/> with one process_vm_readv each. Two buffers
    /// alternate so that reading the next batch overlaps writing the previous one (two copies
    /// that each run near memcpy speed, on two cores). Returns the number of pages written.
    /// </summary>
    public static ulong WritePages(int pid, IReadOnlyList<ScanRun> runs, IDumpPagemap writer, bool lazy = false) =>
        WritePages(pid, runs, writer, running: false, out _, lazy);

    /// <summary>
    /// As above; with <paramref name="running"/> the process is not frozen (a pre-dump after its
    /// thaw, Dumper.PreDump.cs): a page it unmapped since the runs were found cannot be read, and
    /// is left out of the pagemap instead of failing the dump (<paramref name="unreadable"/> counts them).
    /// </summary>
    public static ulong WritePages(int pid, IReadOnlyList<ScanRun> runs, IDumpPagemap writer, bool running, out ulong unreadable, bool lazy = false)
    {
        ulong lost = 0;
        try { return WritePages(pid, runs, writer, lazy, running, ref lost); }
        finally { unreadable = lost; }
    }

    private static ulong WritePages(int pid, IReadOnlyList<ScanRun> runs, IDumpPagemap writer, bool lazy, bool running, ref ulong lost)
    {
        var buffers = new[] { (nint)NativeMemory.AlignedAlloc(BatchBytes, PageSize), (nint)NativeMemory.AlignedAlloc(BatchBytes, PageSize) };
        Task? writing = null;
        try
        {
            var ranges = new List<RemoteRange>();
            var pieces = new List<ScanRun>();
            ulong total = 0, lostHere = 0;
            int used = 0, current = 0;
            void Flush()
            {
                if (pieces.Count == 0) return;
                byte* buffer = (byte*)buffers[current];
                HashSet<ulong>? missing = null;
                if (ranges.Count > 0)
                {
                    if (running) missing = ReadRunning(pid, ranges, new Span<byte>(buffer, used));
                    else ReadRanges(pid, ranges, new Span<byte>(buffer, used));
                }
                if (missing != null) lostHere += (ulong)missing.Count;
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
                        if (missing is null) writer.Write(p.Vaddr, new ReadOnlySpan<byte>(buffer + off, len), p.Flags);
                        else WriteReadable(writer, p, buffer + off, missing);
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
            lost = lostHere;
            return total - lostHere;
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

    /// <summary>The pages of <paramref name="p"/> not in <paramref name="missing"/>, as runs of consecutive readable pages.</summary>
    private static void WriteReadable(IDumpPagemap writer, ScanRun p, byte* data, HashSet<ulong> missing)
    {
        int start = 0;
        for (int i = 0; i <= p.Pages; i++)
        {
            if (i < p.Pages && !missing.Contains(p.Vaddr + (ulong)i * PageSize)) continue;
            if (i > start)
                writer.Write(p.Vaddr + (ulong)start * PageSize, new ReadOnlySpan<byte>(data + (long)start * PageSize, (i - start) * PageSize), p.Flags);
            start = i + 1;
        }
    }

    /// <summary>
    /// Reads the ranges from a process that runs. One process_vm_readv as a rule; if it fails
    /// (a range unmapped or made PROT_NONE since the runs were found), /proc/PID/mem page by page
    /// for the ranges that fail, and the pages that cannot be read at all are returned (zeroed
    /// in <paramref name="dest"/>), or null when every page was read. A process that is gone fails the read.
    /// </summary>
    private static HashSet<ulong>? ReadRunning(int pid, List<RemoteRange> ranges, Span<byte> dest)
    {
        try
        {
            RemoteMemory.ReadBatch(pid, CollectionsMarshal.AsSpan(ranges), dest);
            return null;
        }
        catch (SyscallException e) when (!e.Is(Errno.ESRCH)) { }
        HashSet<ulong>? missing = null;
        using (var mem = new ProcMem(pid, writable: false))
        {
            int off = 0;
            foreach (var r in ranges)
            {
                var slice = dest.Slice(off, r.Length);
                off += r.Length;
                try
                {
                    mem.Read(r.Address, slice);
                    continue;
                }
                catch (SyscallException) { }
                for (int at = 0; at < r.Length; at += PageSize)
                {
                    try { mem.Read(r.Address + (ulong)at, slice.Slice(at, PageSize)); }
                    catch (SyscallException)
                    {
                        slice.Slice(at, PageSize).Clear();
                        (missing ??= []).Add(r.Address + (ulong)at);
                    }
                }
            }
        }
        if (missing != null && !Directory.Exists($"/proc/{pid}/task"))
            throw new CrispException($"process {pid} exited while its pages were copied");
        return missing;
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
