namespace Crisp.Native;

/// <summary>Kernel constants that more than one part of crisp uses (x86-64 values).</summary>
public static partial class LibC
{
    public const int EFD_SEMAPHORE = 1;
    public const int F_SETSIG = 10;
    public const int MADV_GUARD_INSTALL = 102;
    public const int MADV_MERGEABLE = 12;
    public const int MADV_RANDOM = 1;
    public const int MADV_SEQUENTIAL = 2;
    public const int SECCOMP_MODE_FILTER = 2;
    public const int SECCOMP_MODE_STRICT = 1;
    public const int SEEK_DATA = 3;
    public const int SEEK_HOLE = 4;
    public const int SIGEV_SIGNAL = 0, SIGEV_NONE = 1, SIGEV_THREAD = 2, SIGEV_THREAD_ID = 4;
    public const int SOL_TCP = 6;
    public const long SYS_clock_gettime = 228;
    public const long SYS_membarrier = 324;
    public const long SYS_open_by_handle_at = 304;
    public const long SYS_setns = 308;
}
