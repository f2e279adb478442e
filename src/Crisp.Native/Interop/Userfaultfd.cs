using System.Runtime.InteropServices;

namespace Crisp.Native;

/// <summary>userfaultfd(2) ABI: ioctl numbers, structs and flags from linux/userfaultfd.h.</summary>
public static unsafe partial class LibC
{
    public const ulong UFFD_API = 0xAA;
    public const ulong UFFDIO_API = 0xC018AA3F, UFFDIO_REGISTER = 0xC020AA00, UFFDIO_UNREGISTER = 0x8010AA01,
        UFFDIO_WAKE = 0x8010AA02, UFFDIO_COPY = 0xC028AA03, UFFDIO_ZEROPAGE = 0xC020AA04,
        UFFDIO_MOVE = 0xC028AA05, UFFDIO_WRITEPROTECT = 0xC018AA06, UFFDIO_CONTINUE = 0xC020AA07,
        UFFDIO_POISON = 0xC020AA08;
    /// <summary>ioctl on /dev/userfaultfd that returns a new uffd.</summary>
    public const ulong USERFAULTFD_IOC_NEW = 0xAA00;

    public const ulong UFFD_FEATURE_PAGEFAULT_FLAG_WP = 1 << 0, UFFD_FEATURE_EVENT_FORK = 1 << 1,
        UFFD_FEATURE_EVENT_REMAP = 1 << 2, UFFD_FEATURE_EVENT_REMOVE = 1 << 3,
        UFFD_FEATURE_MISSING_HUGETLBFS = 1 << 4, UFFD_FEATURE_MISSING_SHMEM = 1 << 5,
        UFFD_FEATURE_EVENT_UNMAP = 1 << 6, UFFD_FEATURE_SIGBUS = 1 << 7, UFFD_FEATURE_THREAD_ID = 1 << 8,
        UFFD_FEATURE_MINOR_HUGETLBFS = 1 << 9, UFFD_FEATURE_MINOR_SHMEM = 1 << 10,
        UFFD_FEATURE_EXACT_ADDRESS = 1 << 11, UFFD_FEATURE_WP_HUGETLBFS_SHMEM = 1 << 12,
        UFFD_FEATURE_WP_UNPOPULATED = 1 << 13, UFFD_FEATURE_POISON = 1 << 14, UFFD_FEATURE_WP_ASYNC = 1 << 15,
        UFFD_FEATURE_MOVE = 1 << 16;

    public const ulong UFFDIO_REGISTER_MODE_MISSING = 1, UFFDIO_REGISTER_MODE_WP = 2, UFFDIO_REGISTER_MODE_MINOR = 4;
    public const ulong UFFDIO_COPY_MODE_DONTWAKE = 1, UFFDIO_COPY_MODE_WP = 2, UFFDIO_ZEROPAGE_MODE_DONTWAKE = 1;

    public const byte UFFD_EVENT_PAGEFAULT = 0x12, UFFD_EVENT_FORK = 0x13, UFFD_EVENT_REMAP = 0x14,
        UFFD_EVENT_REMOVE = 0x15, UFFD_EVENT_UNMAP = 0x16;
    public const ulong UFFD_PAGEFAULT_FLAG_WRITE = 1, UFFD_PAGEFAULT_FLAG_WP = 2, UFFD_PAGEFAULT_FLAG_MINOR = 4;

    [StructLayout(LayoutKind.Sequential)]
    public struct uffdio_api { public ulong api; public ulong features; public ulong ioctls; }

    [StructLayout(LayoutKind.Sequential)]
    public struct uffdio_range { public ulong start; public ulong len; }

    [StructLayout(LayoutKind.Sequential)]
    public struct uffdio_register { public uffdio_range range; public ulong mode; public ulong ioctls; }

    [StructLayout(LayoutKind.Sequential)]
    public struct uffdio_copy { public ulong dst; public ulong src; public ulong len; public ulong mode; public long copy; }

    [StructLayout(LayoutKind.Sequential)]
    public struct uffdio_move { public ulong dst; public ulong src; public ulong len; public ulong mode; public long move; }

    [StructLayout(LayoutKind.Sequential)]
    public struct uffdio_zeropage { public uffdio_range range; public ulong mode; public long zeropage; }

    [StructLayout(LayoutKind.Sequential)]
    public struct uffdio_poison { public uffdio_range range; public ulong mode; public long updated; }

    [StructLayout(LayoutKind.Sequential)]
    public struct uffdio_writeprotect { public uffdio_range range; public ulong mode; }

    /// <summary>struct uffd_msg: 32 bytes; the union is read through the typed views below.</summary>
    [StructLayout(LayoutKind.Explicit, Size = 32)]
    public struct uffd_msg
    {
        [FieldOffset(0)] public byte @event;
        // pagefault
        [FieldOffset(8)] public ulong pf_flags;
        [FieldOffset(16)] public ulong pf_address;
        [FieldOffset(24)] public uint pf_ptid;
        // fork
        [FieldOffset(8)] public uint fork_ufd;
        // remap
        [FieldOffset(8)] public ulong remap_from;
        [FieldOffset(16)] public ulong remap_to;
        [FieldOffset(24)] public ulong remap_len;
        // remove / unmap
        [FieldOffset(8)] public ulong remove_start;
        [FieldOffset(16)] public ulong remove_end;
    }

    public static int userfaultfd(int flags) => (int)Syscall(SYS_userfaultfd, flags);
}
