namespace Crisp.Images;

/// <summary>
/// Bits of <c>vma_entry.status</c> (CRIU's include/image.h). These, not the
/// names in /proc/PID/maps, tell a restorer what kind of mapping a VMA is.
/// </summary>
public static class VmaStatus
{
    public const uint VMA_AREA_NONE = 0;
    public const uint VMA_AREA_REGULAR = 1u << 0;
    public const uint VMA_AREA_STACK = 1u << 1;
    public const uint VMA_AREA_VSYSCALL = 1u << 2;
    public const uint VMA_AREA_VDSO = 1u << 3;
    public const uint VMA_AREA_HEAP = 1u << 5;
    public const uint VMA_FILE_PRIVATE = 1u << 6;
    public const uint VMA_FILE_SHARED = 1u << 7;
    public const uint VMA_ANON_SHARED = 1u << 8;
    public const uint VMA_ANON_PRIVATE = 1u << 9;
    public const uint VMA_AREA_SYSVIPC = 1u << 10;
    public const uint VMA_AREA_SOCKET = 1u << 11;
    public const uint VMA_AREA_VVAR = 1u << 12;
    public const uint VMA_AREA_AIORING = 1u << 13;
    public const uint VMA_AREA_MEMFD = 1u << 14;
    public const uint VMA_AREA_GUARD = 1u << 16;
    public const uint VMA_EXT_PLUGIN = 1u << 27;
    public const uint VMA_CLOSE = 1u << 28;
    public const uint VMA_NO_PROT_WRITE = 1u << 29;
    public const uint VMA_PREMMAPED = 1u << 30;
    /// <summary>Never valid in an image: CRIU uses it in memory for "cannot dump".</summary>
    public const uint VMA_UNSUPP = 1u << 31;

    public static bool Has(uint status, uint bits) => (status & bits) == bits;
}
