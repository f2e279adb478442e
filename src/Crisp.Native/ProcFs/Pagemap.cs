namespace Crisp.Native.ProcFs;

/// <summary>One u64 of /proc/PID/pagemap (Documentation/admin-guide/mm/pagemap.rst).</summary>
public readonly record struct PagemapEntry(ulong Raw)
{
    public bool Present => (Raw & (1UL << 63)) != 0;
    public bool Swapped => (Raw & (1UL << 62)) != 0;
    /// <summary>Page is file-mapped or shared-anonymous.</summary>
    public bool FileOrShared => (Raw & (1UL << 61)) != 0;
    /// <summary>Page is mapped exclusively (only this process).</summary>
    public bool Exclusive => (Raw & (1UL << 56)) != 0;
    /// <summary>Bit 55: soft-dirty (always 0 on kernels without it).</summary>
    public bool SoftDirty => (Raw & (1UL << 55)) != 0;
    /// <summary>Bit 57: userfaultfd write-protected.</summary>
    public bool UffdWp => (Raw & (1UL << 57)) != 0;
    /// <summary>Bit 58: a LibC.MADV_GUARD_INSTALL guard marker (Linux 6.15+); it reads as swapped, but holds no page.</summary>
    public bool Guard => (Raw & (1UL << 58)) != 0;
    /// <summary>Page frame number (0 without CAP_SYS_ADMIN); swap type/offset when swapped.</summary>
    public ulong Pfn => Raw & ((1UL << 55) - 1);
    /// <summary>Has content a dump must carry: present or swapped.</summary>
    public bool HasData => (Raw & (3UL << 62)) != 0;
}
