using Crisp.Images;
using Crisp.Images.Proto;
using Crisp.Native;

namespace Crisp.Checkpoint.Dump;

/// <summary>
/// Guard regions (madvise LibC.MADV_GUARD_INSTALL, Linux 6.13): page ranges inside a VMA whose
/// access raises SIGSEGV, kept as markers in the page tables, not as VMAs. As CRIU records
/// them, each range found by LibC.PAGEMAP_SCAN (category PAGE_IS_GUARD, Linux 6.14+) becomes a
/// pseudo-VMA with status VMA_AREA_GUARD at the end of mm.vmas; restore installs them again
/// with LibC.MADV_GUARD_INSTALL once the memory is in (Restore/RestoreGuards.cs). Their pages are
/// never read: a guard marker holds none.
/// </summary>
internal static unsafe class GuardRegions
{
    /// <summary>x86-64's user address space: TASK_SIZE with 4-level page tables (5-level has more, and guards there are found too when the scan goes on).</summary>
    private const ulong TaskSize = 0x7ffffffff000;

    private static readonly Lazy<bool> ScanKnowsGuards = new(Probe);

    /// <summary>PAGE_IS_GUARD when the kernel's LibC.PAGEMAP_SCAN knows it (an unknown bit is EINVAL), else 0.</summary>
    public static ulong ScanMask => ScanKnowsGuards.Value ? LibC.PAGE_IS_GUARD : 0;

    /// <summary>The guard ranges of <paramref name="pid"/> as VMA_AREA_GUARD entries, in address order.</summary>
    public static List<VmaEntry> Collect(int pid)
    {
        var result = new List<VmaEntry>();
        if (!ScanKnowsGuards.Value)
        {
            if (MadvGuardExists.Value)
                Log.W($"process {pid}: this kernel has MADV_GUARD_INSTALL but its PAGEMAP_SCAN cannot report guard regions: any the process installed are not dumped");
            return result;
        }
        string path = $"/proc/{pid}/pagemap";
        int fd = LibC.open(path, LibC.O_RDONLY | LibC.O_CLOEXEC, 0);
        if (fd < 0) throw Errno.Failure("open", path);
        const int VecLen = 1024;
        var vec = new LibC.page_region[VecLen];
        try
        {
            ulong at = 0;
            while (at < TaskSize)
            {
                var arg = new LibC.pm_scan_arg
                {
                    size = (ulong)sizeof(LibC.pm_scan_arg), start = at, end = TaskSize,
                    category_mask = LibC.PAGE_IS_GUARD, return_mask = LibC.PAGE_IS_GUARD,
                };
                long n;
                fixed (LibC.page_region* pv = vec)
                {
                    arg.vec = (ulong)pv;
                    arg.vec_len = VecLen;
                    n = LibC.ioctl(fd, LibC.PAGEMAP_SCAN, &arg);
                }
                if (n < 0) throw Errno.Failure("ioctl(PAGEMAP_SCAN, PAGE_IS_GUARD)", $"{path} 0x{at:x}");
                for (int i = 0; i < n; i++)
                {
                    if (result.Count > 0 && result[^1].End == vec[i].start) result[^1].End = vec[i].end;
                    else result.Add(new VmaEntry
                    {
                        Start = vec[i].start, End = vec[i].end, Pgoff = 0, Shmid = 0, Prot = 0, Flags = 0,
                        Status = VmaStatus.VMA_AREA_GUARD, Fd = -1,
                    });
                }
                if (arg.walk_end <= at) break;
                at = arg.walk_end;
            }
        }
        finally { LibC.close(fd); }
        return result;
    }

    private static bool Probe()
    {
        int fd = LibC.open("/proc/self/pagemap", LibC.O_RDONLY | LibC.O_CLOEXEC, 0);
        if (fd < 0) return false;
        try
        {
            var vec = new LibC.page_region[1];
            nint page = LibC.mmap(0, LibC.PageSize, LibC.PROT_READ, LibC.MAP_PRIVATE | LibC.MAP_ANONYMOUS, -1, 0);
            if (page == LibC.MAP_FAILED) return false;
            try
            {
                fixed (LibC.page_region* pv = vec)
                {
                    var arg = new LibC.pm_scan_arg
                    {
                        size = (ulong)sizeof(LibC.pm_scan_arg), start = (ulong)page, end = (ulong)page + LibC.PageSize,
                        vec = (ulong)pv, vec_len = 1, category_mask = LibC.PAGE_IS_GUARD, return_mask = LibC.PAGE_IS_GUARD,
                    };
                    return LibC.ioctl(fd, LibC.PAGEMAP_SCAN, &arg) >= 0;
                }
            }
            finally { LibC.munmap(page, LibC.PageSize); }
        }
        finally { LibC.close(fd); }
    }

    private static readonly Lazy<bool> MadvGuardExists = new(() =>
    {
        nint page = LibC.mmap(0, LibC.PageSize, LibC.PROT_READ, LibC.MAP_PRIVATE | LibC.MAP_ANONYMOUS, -1, 0);
        if (page == LibC.MAP_FAILED) return false;
        try { return LibC.madvise(page, LibC.PageSize, LibC.MADV_GUARD_INSTALL) == 0; }
        finally { LibC.munmap(page, LibC.PageSize); }
    });
}
