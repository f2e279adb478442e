using System.Runtime.InteropServices;

namespace Crisp.Native;

/// <summary>PAGEMAP_SCAN ioctl on /proc/PID/pagemap (Linux 6.7+): page ranges by category, from linux/fs.h.</summary>
public static unsafe partial class LibC
{
    public const ulong PAGEMAP_SCAN = 0xC0606610;
    public const ulong PAGE_IS_WPALLOWED = 1 << 0, PAGE_IS_WRITTEN = 1 << 1, PAGE_IS_FILE = 1 << 2, PAGE_IS_PRESENT = 1 << 3,
        PAGE_IS_SWAPPED = 1 << 4, PAGE_IS_PFNZERO = 1 << 5, PAGE_IS_HUGE = 1 << 6, PAGE_IS_SOFT_DIRTY = 1 << 7,
        /// <summary>MADV_GUARD_INSTALL guard markers (Linux 6.14+ reports them).</summary>
        PAGE_IS_GUARD = 1 << 8;

    [StructLayout(LayoutKind.Sequential)]
    public struct pm_scan_arg
    {
        public ulong size, flags, start, end, walk_end, vec, vec_len, max_pages;
        public ulong category_inverted, category_mask, category_anyof_mask, return_mask;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct page_region { public ulong start, end, categories; }
}
