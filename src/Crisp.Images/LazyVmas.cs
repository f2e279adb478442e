using Crisp.Images.Proto;

namespace Crisp.Images;

/// <summary>Which VMAs a lazy restore leaves empty for the lazy-pages daemon: the restorer and the daemon must agree.</summary>
public static class LazyVmas
{
    private const uint MAP_PRIVATE = 0x02, MAP_ANONYMOUS = 0x20, MAP_LOCKED = 0x2000, MAP_HUGETLB = 0x40000;

    /// <summary>
    /// Whether restore registers this VMA with the uffd: private anonymous, not locked, not
    /// hugetlb, not vdso/vvar/vsyscall.
    /// </summary>
    public static bool IsLazy(VmaEntry vma)
    {
        if ((vma.Status & VmaStatus.VMA_AREA_REGULAR) == 0) return false;
        if ((vma.Status & (VmaStatus.VMA_AREA_VDSO | VmaStatus.VMA_AREA_VVAR | VmaStatus.VMA_AREA_VSYSCALL)) != 0) return false;
        if ((vma.Status & VmaStatus.VMA_ANON_PRIVATE) == 0) return false;
        if ((vma.Flags & (MAP_PRIVATE | MAP_ANONYMOUS)) != (MAP_PRIVATE | MAP_ANONYMOUS)) return false;
        return (vma.Flags & (MAP_LOCKED | MAP_HUGETLB)) == 0;
    }
}
