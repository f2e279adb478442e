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

/// <summary>Flags of <c>pagemap_entry.flags</c>.</summary>
[Flags]
public enum PagemapFlags : uint
{
    None = 0,
    /// <summary>The pages are in the parent (pre-dump) image directory.</summary>
    Parent = 1,
    /// <summary>The pages may be restored lazily (on fault).</summary>
    Lazy = 2,
    /// <summary>The pages' bytes are in this pagemap's pages-N.img.</summary>
    Present = 4,
}

/// <summary>
/// Values of <c>task_core_entry.task_state</c>, as CRIU writes them: TASK_ALIVE 1; a zombie is
/// recorded as TASK_DEAD 2 (CRIU turns compel's TASK_ZOMBIE 6 into TASK_DEAD when it seizes the
/// tree); a job-control-stopped process as TASK_STOPPED 3. (crit 3.17 prints 3 as "Zombie" and
/// 6 as "Stopped": its labels, not the values CRIU dumps and restores.)
/// </summary>
public static class TaskStates
{
    public const uint Alive = 1;
    public const uint Zombie = 2;
    public const uint Stopped = 3;
}
