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

/// <summary>One VMA as dumped, with the pages the dump must carry for it.</summary>
internal sealed record DumpedVma(Vma Source, VmaEntry Entry, bool CarriesPages, bool Lazy, bool AnonPagesOnly);

/// <summary>
/// The memory side of a dump: VMAs from smaps turned into vma entries, and the pages that
/// hold data (present or swapped, per /proc/PID/pagemap) read with process_vm_readv in large
/// batches and handed to a page sink in address order.
/// </summary>
internal static unsafe partial class MemoryDump
{
    private const int PageSize = LibC.PageSize;
    /// <summary>Bytes read per process_vm_readv batch: large enough to amortize the call, small enough to stay in cache-ish.</summary>
    private const int BatchBytes = 8 << 20;

    private static readonly Lazy<ulong> ZeroPfn = new(FindZeroPfn);

    public static List<DumpedVma> Vmas(int pid, FileTable files, IReadOnlyList<Vma>? smaps = null, SharedAnonMemory? sharedAnon = null)
    {
        var result = new List<DumpedVma>();
        foreach (var v in smaps ?? Proc.Smaps(pid))
        {
            uint status;
            uint flags = v.Shared ? (uint)LibC.MAP_SHARED : (uint)LibC.MAP_PRIVATE;
            ulong shmid = 0;
            bool pages = false, lazy = false, anonOnly = false, socketMap = false;
            bool locked = (v.Flags & VmFlags.lo) != 0, huge = (v.Flags & VmFlags.ht) != 0;
            if (huge)
                throw new CrispException($"process {pid}: hugetlb mapping {v} is not supported yet");
            if ((v.Flags & VmFlags.gd) != 0) flags |= LibC.MAP_GROWSDOWN;
            if ((v.Flags & VmFlags.nr) != 0) flags |= LibC.MAP_NORESERVE;
            // mlock'ed (VM_LOCKED): mapped with LibC.MAP_LOCKED again, as CRIU does.
            if (locked) flags |= LibC.MAP_LOCKED;
            // MAP_DROPPABLE (Linux 6.11) is a mapping type of its own, in place of MAP_PRIVATE.
            if (v.RawVmFlags.Contains("dp")) flags = (flags & ~(uint)LibC.MAP_PRIVATE) | MAP_DROPPABLE;

            if (v.IsVsyscall)
            {
                status = VmaStatus.VMA_AREA_VSYSCALL | VmaStatus.VMA_ANON_PRIVATE;
                flags |= LibC.MAP_ANONYMOUS;
            }
            else if (v.IsVdso)
            {
                status = VmaStatus.VMA_AREA_REGULAR | VmaStatus.VMA_AREA_VDSO | VmaStatus.VMA_ANON_PRIVATE;
                flags |= LibC.MAP_ANONYMOUS;
                pages = true;
            }
            else if (v.IsVvar)
            {
                status = VmaStatus.VMA_AREA_REGULAR | VmaStatus.VMA_AREA_VVAR | VmaStatus.VMA_ANON_PRIVATE;
                flags |= LibC.MAP_ANONYMOUS;
            }
            else if (v.Inode == 0 && (v.Path.Length == 0 || v.Path is "[heap]" or "[stack]" || v.Path.StartsWith("[anon:", StringComparison.Ordinal)))
            {
                flags |= LibC.MAP_ANONYMOUS;
                status = VmaStatus.VMA_AREA_REGULAR | (v.Shared ? VmaStatus.VMA_ANON_SHARED : VmaStatus.VMA_ANON_PRIVATE);
                if (v.Path == "[heap]") status |= VmaStatus.VMA_AREA_HEAP;
                pages = true;
                lazy = !v.Shared && !locked && (flags & MAP_DROPPABLE) == 0; // as LocalImages.IsLazy decides at restore
                // The kernel may drop a droppable mapping's pages at any time and the process must
                // cope with zeros: they are not carried (CRIU does the same).
                if ((flags & MAP_DROPPABLE) != 0) pages = false;
            }
            else if (v.Shared && v.Deleted && v.Path == "/dev/zero")
            {
                // MAP_SHARED|MAP_ANONYMOUS: shmem behind a deleted /dev/zero, maybe mapped by other
                // processes too; its bytes go once to pagemap-shmem (SharedAnonMemory.cs).
                flags |= LibC.MAP_ANONYMOUS;
                status = VmaStatus.VMA_AREA_REGULAR | VmaStatus.VMA_ANON_SHARED;
                shmid = v.Inode;
                if (sharedAnon != null) sharedAnon.Add(pid, v);
                else pages = true;
            }
            else if (v.Inode != 0 && v.Deleted && (v.Path.StartsWith("/memfd:", StringComparison.Ordinal) || (!v.Shared && v.Path == "/dev/zero")))
            {
                // Like a file mapping, of the memfd's inode (its bytes are dumped with the inode).
                status = VmaStatus.VMA_AREA_REGULAR | VmaStatus.VMA_AREA_MEMFD | (v.Shared ? VmaStatus.VMA_FILE_SHARED : VmaStatus.VMA_FILE_PRIVATE);
                bool writable = v.Shared && (v.Flags & VmFlags.mw) != 0;
                shmid = files.MemfdForMapping(pid, v, writable ? LibC.O_RDWR : LibC.O_RDONLY);
                pages = !v.Shared;
                anonOnly = true;
            }
            else if (v.Shared && v.Path.StartsWith("/SYSV", StringComparison.Ordinal))
            {
                // An attachment of a System V segment (maps: /SYSV<key>, inode = shmid), as CRIU
                // records it; its bytes are the segment's, dumped with the IPC namespace (OwnedNamespaces.cs).
                flags |= LibC.MAP_ANONYMOUS;
                status = VmaStatus.VMA_AREA_REGULAR | VmaStatus.VMA_ANON_SHARED | VmaStatus.VMA_AREA_SYSVIPC;
                shmid = v.Inode;
            }
            else if (AioRings.IsRing(v))
            {
                // An io_setup ring: its pages go whole, its context is made again at restore (AioRings.cs).
                status = VmaStatus.VMA_AREA_AIORING;
                pages = true;
            }
            else if (v.Inode != 0 && v.Path.StartsWith('/'))
            {
                if (v.Path.StartsWith("/SYSV", StringComparison.Ordinal) || v.Path.StartsWith("/memfd:", StringComparison.Ordinal))
                    throw new CrispException($"process {pid}: mapping {v} (System V shm or memfd) is not supported yet");
                status = VmaStatus.VMA_AREA_REGULAR | (v.Shared ? VmaStatus.VMA_FILE_SHARED : VmaStatus.VMA_FILE_PRIVATE);
                bool writable = v.Shared && (v.Flags & VmFlags.mw) != 0;
                shmid = v.Deleted ? files.GhostForMapping(pid, v, writable ? LibC.O_RDWR : LibC.O_RDONLY)
                    : files.RegularForPath(v.Path, writable ? LibC.O_RDWR : LibC.O_RDONLY);
                // Private file mappings carry the pages they made their own (copy-on-write).
                pages = !v.Shared;
                anonOnly = true;
            }
            else if (v.Inode != 0 && v.Path.StartsWith("socket:[", StringComparison.Ordinal))
            {
                // A packet socket's rings mapped by the process (CRIU's VMA_AREA_SOCKET): restore maps
                // the new socket's rings here again; the frames are not carried (nor by CRIU).
                if (v.Offset != 0)
                    throw new CrispException($"process {pid}: mapping {v} is part of a socket's ring mapping (offset 0x{v.Offset:x}): not supported yet (the kernel maps a ring whole)");
                status = VmaStatus.VMA_AREA_REGULAR | VmaStatus.VMA_AREA_SOCKET;
                socketMap = true;
            }
            else
            {
                throw new CrispException($"process {pid}: mapping {v} is not supported yet");
            }

            var entry = new VmaEntry
            {
                Start = v.Start, End = v.End, Pgoff = v.Offset, Shmid = shmid, Prot = (uint)v.Prot,
                Flags = flags, Status = status, Fd = -1, Madv = Madvise(v.Flags),
            };
            if ((status & (VmaStatus.VMA_FILE_PRIVATE | VmaStatus.VMA_FILE_SHARED | VmaStatus.VMA_AREA_SOCKET)) != 0) entry.Fdflags = MappedFileMode(pid, v);
            if (socketMap) files.SocketMapping(pid, v, entry);
            if ((status & VmaStatus.VMA_ANON_SHARED) != 0 && (status & VmaStatus.VMA_AREA_SYSVIPC) == 0 && sharedAnon != null) files.SharedAnonMapping(pid, v, entry);
            result.Add(new DumpedVma(v, entry, pages, lazy, anonOnly));
        }
        return result;
    }

    /// <summary>
    /// Whether two readings of a process's maps describe the same VMAs (bounds, protection,
    /// sharing, backing file and offset); VmFlags are not compared (maps does not show them).
    /// </summary>
    public static bool SameLayout(IReadOnlyList<Vma> a, IReadOnlyList<Vma> b)
    {
        if (a.Count != b.Count) return false;
        for (int i = 0; i < a.Count; i++)
        {
            var x = a[i];
            var y = b[i];
            if (x.Start != y.Start || x.End != y.End || x.Prot != y.Prot || x.Shared != y.Shared || x.Offset != y.Offset ||
                x.Inode != y.Inode || x.DevMajor != y.DevMajor || x.DevMinor != y.DevMinor || x.Path != y.Path || x.Deleted != y.Deleted)
                return false;
        }
        return true;
    }

    /// <summary>
    /// The open mode of the file a VMA maps (O_RDONLY, O_WRONLY or O_RDWR), as CRIU records it in
    /// fdflags: the owner bits of the mapping's /proc/PID/map_files link are the file's FMODE_READ /
    /// FMODE_WRITE. Without the link (a kernel hiding map_files), what the mapping allows: read-write
    /// for a shared one that may be written (VM_MAYWRITE), read-only otherwise.
    /// </summary>
    public static uint MappedFileMode(int pid, Vma v)
    {
        LibC.stat_t st;
        if (LibC.lstat($"/proc/{pid}/map_files/{v.Start:x}-{v.End:x}", &st) == 0)
            switch (st.st_mode & 0x180)   // 0600
            {
                case 0x180: return (uint)LibC.O_RDWR;
                case 0x80: return (uint)LibC.O_WRONLY;
                case 0x100: return (uint)LibC.O_RDONLY;
            }
        return v.Shared && (v.Flags & VmFlags.mw) != 0 ? (uint)LibC.O_RDWR : (uint)LibC.O_RDONLY;
    }

    private const uint MAP_DROPPABLE = 0x08;

    private static ulong Madvise(VmFlags f)
    {
        ulong m = 0;
        if ((f & VmFlags.hg) != 0) m |= 1UL << LibC.MADV_HUGEPAGE;
        if ((f & VmFlags.nh) != 0) m |= 1UL << LibC.MADV_NOHUGEPAGE;
        if ((f & VmFlags.dc) != 0) m |= 1UL << LibC.MADV_DONTFORK;
        if ((f & VmFlags.dd) != 0) m |= 1UL << LibC.MADV_DONTDUMP;
        if ((f & VmFlags.wf) != 0) m |= 1UL << LibC.MADV_WIPEONFORK;
        if ((f & VmFlags.sr) != 0) m |= 1UL << LibC.MADV_SEQUENTIAL;
        if ((f & VmFlags.rr) != 0) m |= 1UL << LibC.MADV_RANDOM;
        if ((f & VmFlags.mg) != 0) m |= 1UL << LibC.MADV_MERGEABLE;
        return m;
    }

    /// <summary>
    /// A run of pages with data, as found in /proc/PID/pagemap. Clean: in a write-tracked VMA and
    /// not written since the tracking was last reset (WriteTracking.cs). Flags Parent (without
    /// Present): the pages are in the parent images and only their pagemap entry is written.
    /// </summary>
    internal readonly record struct ScanRun(ulong Vaddr, int Pages, PagemapFlags Flags, bool Clean = false)
    {
        public ulong End => Vaddr + (ulong)Pages * PageSize;
    }

    /// <summary>The runs of pages with data in the dumped VMAs, in address order; with <paramref name="written"/>, tracked VMAs' runs say whether they were written.</summary>
    public static List<ScanRun> PresentRuns(int pid, IReadOnlyList<DumpedVma> vmas, bool written = false) =>
        ScanRuns(pid, vmas, written) ?? (written ? throw new CrispException($"process {pid}: --track-mem needs PAGEMAP_SCAN (Linux 6.7+)") : PagemapRuns(pid, vmas));

    /// <summary>
    /// <paramref name="runs"/> with every clean page that <paramref name="parent"/> has data for
    /// turned into a Parent run (CRIU's PE_PARENT hole): the dump writes no bytes for it and a
    /// restore reads it from the parent images.
    /// </summary>
    public static List<ScanRun> AgainstParent(List<ScanRun> runs, Crisp.Images.Pages.PagemapReader parent, out ulong inParent)
    {
        var result = new List<ScanRun>(runs.Count);
        inParent = 0;
        foreach (var r in runs)
        {
            if (!r.Clean) { result.Add(r); continue; }
            ulong at = r.Vaddr;
            while (at < r.End)
            {
                int i = parent.IndexOf(at);
                ulong end;
                bool there = i >= 0 && parent.Runs[i].IsPresent;
                if (there) end = Math.Min(parent.Runs[i].End, r.End);
                else
                {
                    // Up to the next parent run with data.
                    end = r.End;
                    for (int j = NextRun(parent, at); j < parent.Runs.Count && parent.Runs[j].Vaddr < r.End; j++)
                        if (parent.Runs[j].IsPresent && parent.Runs[j].Vaddr > at) { end = parent.Runs[j].Vaddr; break; }
                }
                int pages = (int)((end - at) / PageSize);
                var flags = there ? PagemapFlags.Parent : r.Flags;
                if (there) inParent += (ulong)pages;
                if (result.Count > 0 && result[^1].End == at && result[^1].Flags == flags)
                    result[^1] = result[^1] with { Pages = result[^1].Pages + pages };
                else result.Add(new ScanRun(at, pages, flags, r.Clean));
                at = end;
            }
        }
        return result;
    }

    private static int NextRun(Crisp.Images.Pages.PagemapReader parent, ulong at)
    {
        int lo = 0, hi = parent.Runs.Count;
        while (lo < hi)
        {
            int mid = (lo + hi) / 2;
            if (parent.Runs[mid].End <= at) lo = mid + 1; else hi = mid;
        }
        return lo;
    }

    private static bool _noScan;

    /// <summary>
    /// The same runs as <see cref="PagemapRuns"/>, from LibC.PAGEMAP_SCAN: the kernel returns ranges
    /// (one for a fully populated VMA) instead of 8 bytes per page, and looks a page up only for
    /// the categories asked for. 1 GiB: 13 ms with pagemap reads, about 3 ms with this. Null
    /// if the kernel lacks the ioctl.
    /// </summary>
    internal static List<ScanRun>? ScanRuns(int pid, IReadOnlyList<DumpedVma> vmas, bool written = false)
    {
        if (_noScan) return null;
        string path = $"/proc/{pid}/pagemap";
        int fd = LibC.open(path, LibC.O_RDONLY | LibC.O_CLOEXEC, 0);
        Errno.Check(fd, "open", path);
        var runs = new List<ScanRun>();
        const int VecLen = 4096;
        var vec = new LibC.page_region[VecLen];
        try
        {
            foreach (var v in vmas)
            {
                if (!v.CarriesPages) continue;
                if (WholeVdso(v, runs)) continue;
                int first = runs.Count; // runs never span two VMAs, as with pagemap
                var flags = v.Lazy ? PagemapFlags.Present | PagemapFlags.Lazy : PagemapFlags.Present;
                ulong ret = LibC.PAGE_IS_PRESENT | LibC.PAGE_IS_SWAPPED | LibC.PAGE_IS_PFNZERO | (v.AnonPagesOnly ? LibC.PAGE_IS_FILE : 0) | GuardRegions.ScanMask;
                bool tracked = written && WriteTracking.Tracked(v);
                if (tracked) ret |= LibC.PAGE_IS_WRITTEN | LibC.PAGE_IS_WPALLOWED;
                for (ulong at = v.Entry.Start; at < v.Entry.End;)
                {
                    long n;
                    var arg = new LibC.pm_scan_arg
                    {
                        size = (ulong)sizeof(LibC.pm_scan_arg), start = at, end = v.Entry.End,
                        category_anyof_mask = LibC.PAGE_IS_PRESENT | LibC.PAGE_IS_SWAPPED, return_mask = ret,
                    };
                    fixed (LibC.page_region* pv = vec)
                    {
                        arg.vec = (ulong)pv;
                        arg.vec_len = VecLen;
                        n = LibC.ioctl(fd, LibC.PAGEMAP_SCAN, &arg);
                    }
                    if (n < 0)
                    {
                        int e = Errno.Last;
                        if (e is Errno.ENOTTY or Errno.EINVAL && runs.Count == 0 && at == v.Entry.Start)
                        {
                            _noScan = true;
                            Log.D($"PAGEMAP_SCAN: {Errno.Name(e)}; reading pagemap instead");
                            return null;
                        }
                        throw new SyscallException("ioctl(PAGEMAP_SCAN)", e, $"{path} 0x{at:x}-0x{v.Entry.End:x}");
                    }
                    for (int i = 0; i < n; i++)
                    {
                        var r = vec[i];
                        // The shared zero page reads as zeros and restores as zeros; in a private file
                        // mapping only copy-on-written (anonymous) pages are the process's own.
                        if ((r.categories & LibC.PAGE_IS_PFNZERO) != 0) continue;
                        // A guard marker (LibC.MADV_GUARD_INSTALL) is a swap-like entry with no page behind it.
                        if ((r.categories & LibC.PAGE_IS_GUARD) != 0) continue;
                        if (v.AnonPagesOnly && (r.categories & LibC.PAGE_IS_FILE) != 0) continue;
                        int pages = (int)((r.end - r.start) / PageSize);
                        // Async write-protected and not written since: the copy in the parent images is current.
                        bool clean = tracked && (r.categories & (LibC.PAGE_IS_WPALLOWED | LibC.PAGE_IS_WRITTEN)) == LibC.PAGE_IS_WPALLOWED;
                        if (runs.Count > first && runs[^1].End == r.start && runs[^1].Clean == clean)
                            runs[^1] = runs[^1] with { Pages = runs[^1].Pages + pages };
                        else runs.Add(new ScanRun(r.start, pages, flags, clean));
                    }
                    // Measured here (6.18, a 60 MiB redis heap): a call that did not fill the vector
                    // returned regions past the walk_end it reported, and the next call from walk_end
                    // returned them again. Go on from the end of the last region returned, never back.
                    ulong next = Math.Max(arg.walk_end, n > 0 ? vec[n - 1].end : 0);
                    at = next > at ? next : v.Entry.End;
                }
            }
        }
        finally { LibC.close(fd); }
        return runs;
    }

    /// <summary>
    /// The vDSO is dumped whole, pages never touched included (reading them faults them in): a
    /// restore on a kernel with another vDSO keeps this copy as a proxy, and every entry point
    /// of it must be there (VdsoProxy.cs).
    /// </summary>
    private static bool WholeVdso(DumpedVma v, List<ScanRun> runs)
    {
        // An AIO ring goes whole too: the kernel wrote it, and its header and events are the ring's state.
        if (!v.Source.IsVdso && (v.Entry.Status & VmaStatus.VMA_AREA_AIORING) == 0) return false;
        runs.Add(new ScanRun(v.Entry.Start, (int)((v.Entry.End - v.Entry.Start) / PageSize), PagemapFlags.Present));
        return true;
    }

    internal static List<ScanRun> PagemapRuns(int pid, IReadOnlyList<DumpedVma> vmas)
    {
        var runs = new List<ScanRun>();
        using var pagemap = new NativePagemap(pid);
        ulong zero = ZeroPfn.Value;
        var entries = new ulong[BatchBytes / PageSize];
        foreach (var v in vmas)
        {
            if (!v.CarriesPages) continue;
            if (WholeVdso(v, runs)) continue;
            var flags = v.Lazy ? PagemapFlags.Present | PagemapFlags.Lazy : PagemapFlags.Present;
            for (ulong at = v.Entry.Start; at < v.Entry.End;)
            {
                int n = (int)Math.Min((ulong)entries.Length, (v.Entry.End - at) / PageSize);
                var span = entries.AsSpan(0, n);
                pagemap.Read(at, span);
                ulong runStart = 0;
                int runLen = 0;
                for (int i = 0; i < n; i++)
                {
                    var e = new PagemapEntry(span[i]);
                    bool keep = e.HasData && !e.Guard;
                    // The shared zero page: never written, reads as zeros, restore gives zeros too.
                    if (keep && e.Present && zero != 0 && e.Pfn == zero) keep = false;
                    // In a private file mapping only copy-on-written (anonymous) pages are the process's own.
                    if (keep && v.AnonPagesOnly && e.FileOrShared) keep = false;
                    ulong addr = at + (ulong)i * PageSize;
                    if (keep)
                    {
                        if (runLen == 0) runStart = addr;
                        runLen++;
                    }
                    else if (runLen > 0)
                    {
                        runs.Add(new ScanRun(runStart, runLen, flags));
                        runLen = 0;
                    }
                }
                if (runLen > 0) runs.Add(new ScanRun(runStart, runLen, flags));
                at += (ulong)n * PageSize;
            }
        }
        return runs;
    }
}
