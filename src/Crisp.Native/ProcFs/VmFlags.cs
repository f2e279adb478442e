using System.Globalization;

namespace Crisp.Native.ProcFs;

/// <summary>The VmFlags letters of /proc/PID/smaps (fs/proc/task_mmu.c, show_smap_vma_flags).</summary>
[Flags]
public enum VmFlags : ulong
{
    None = 0,
    rd = 1UL << 0, wr = 1UL << 1, ex = 1UL << 2, sh = 1UL << 3, mr = 1UL << 4, mw = 1UL << 5,
    me = 1UL << 6, ms = 1UL << 7, gd = 1UL << 8, pf = 1UL << 9, lo = 1UL << 10, io = 1UL << 11,
    sr = 1UL << 12, rr = 1UL << 13, dc = 1UL << 14, de = 1UL << 15, ac = 1UL << 16, nr = 1UL << 17,
    ht = 1UL << 18, sf = 1UL << 19, ar = 1UL << 20, wf = 1UL << 21, dd = 1UL << 22, sd = 1UL << 23,
    mm = 1UL << 24, hg = 1UL << 25, nh = 1UL << 26, mg = 1UL << 27, um = 1UL << 28, uw = 1UL << 29,
    ss = 1UL << 30, sl = 1UL << 31, ui = 1UL << 32, bt = 1UL << 33, mt = 1UL << 34, lf = 1UL << 35,
    /// <summary>Any letter pair this enum does not know; the raw list is in <see cref="Vma.RawVmFlags"/>.</summary>
    Unknown = 1UL << 63,
}
