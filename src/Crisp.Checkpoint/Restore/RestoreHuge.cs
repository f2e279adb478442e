using System.Runtime.InteropServices;
using Crisp.Images;
using Crisp.Images.Pages;
using Crisp.Images.Proto;
using Crisp.Native;

namespace Crisp.Checkpoint.Restore;

/*
 * Eager restore of whole 2 MiB blocks as transparent huge pages.
 *
 * Pages written into the restored process one 4 KiB page at a time cost twice: a page fault
 * each (allocate, zero) while crisp writes them, and, on this kind of machine (a VM), a
 * first-touch cost of several microseconds per page when the process first reads a page the
 * kernel filled for it (docs/LAZY-PAGES.md). A 2 MiB block that the pages image holds whole is
 * instead written into a staging area inside the process that is THP-enabled (so the kernel
 * backs it with one huge page), then moved to its dumped address with UFFDIO_MOVE, which hands
 * the whole PMD over without copying. The staging area is unmapped before the restore goes on,
 * so /proc/PID/maps is the dumped layout.
 *
 * UFFDIO_MOVE works inside one mm, through a uffd whose context is that mm, on ranges
 * registered with it, and only when called from that mm (the kernel refuses cross-mm moves):
 * the uffd is created inside the process by an injected call, crisp takes a copy with
 * pidfd_getfd for the API and (un)register calls, and the moves themselves are injected, one
 * per run of consecutive blocks. The VMAs receiving blocks are registered (MISSING) only while
 * the blocks move, then unregistered, which leaves their flags as they were.
 *
 * Only private anonymous read-write VMAs qualify (the staging area must have the same
 * protection for the move), not locked, not a stack, not marked LibC.MADV_NOHUGEPAGE and not in a
 * process that had THP disabled; a process that never used huge pages gets some, with the same
 * contents and no more memory, since only fully dumped blocks move. A kernel without
 * UFFD_FEATURE_MOVE gets the blocks page by page.
 *
 * It is opt-in (restore --huge-pages): on a VM whose hypervisor takes freed memory back (virtio
 * free page reporting, as on the machine the benchmarks ran on), every new 2 MiB page faults on
 * the host, and the restore of 1 GiB took 1–4.5 s instead of 0.3–0.6 s; the first read of
 * the whole 1 GiB afterwards took 13–20 ms instead of 1.5–1.8 s.
 */
internal sealed unsafe partial class RestoreSession
{
    private const ulong HugeSize = 2 << 20;
    private const ulong StagingSize = 64 << 20;
    /// <summary>Below this much whole-block memory the set-up (uffd, staging, register) is not worth it.</summary>
    private const ulong MinHugeBytes = 16 << 20;

    /// <summary>Whether whole 2 MiB blocks of <paramref name="v"/> may be restored as huge pages.</summary>
    private bool HugeEligible(ProcessImage p, VmaEntry v)
    {
        if (!_o.HugePages || (p.Mm.HasThpDisabled && p.Mm.ThpDisabled)) return false;
        if ((v.Status & VmaStatus.VMA_ANON_PRIVATE) == 0 || (v.Status & VmaStatus.VMA_AREA_STACK) != 0) return false;
        if ((v.Flags & (LibC.MAP_SHARED | LibC.MAP_GROWSDOWN | LibC.MAP_LOCKED)) != 0) return false;
        if (v.HasMadv && (v.Madv & (1UL << LibC.MADV_NOHUGEPAGE)) != 0) return false;
        int prot = (int)v.Prot | (_c.WriteFirst.Contains(v) ? LibC.PROT_WRITE : 0);
        return prot == (LibC.PROT_READ | LibC.PROT_WRITE);
    }

    /// <summary>The 2 MiB-aligned blocks that one present pagemap run holds whole, inside eligible VMAs.</summary>
    private List<(ulong Dst, long Off)> HugeBlocks(ProcessImage p, PagemapReader pm, List<VmaEntry> vmas)
    {
        var blocks = new List<(ulong, long)>();
        var eligible = vmas.Where(v => HugeEligible(p, v)).ToList();
        if (eligible.Count == 0) return blocks;
        int vi = 0;
        foreach (var run in pm.Runs)
        {
            if (!run.IsPresent) continue;
            for (ulong b = (run.Vaddr + HugeSize - 1) & ~(HugeSize - 1); b + HugeSize <= run.End; b += HugeSize)
            {
                while (vi < eligible.Count && eligible[vi].End <= b) vi++;
                if (vi >= eligible.Count) break;
                if (eligible[vi].Start <= b && b + HugeSize <= eligible[vi].End)
                    blocks.Add((b, run.FileOffset + (long)(b - run.Vaddr)));
            }
        }
        if ((ulong)blocks.Count * HugeSize < MinHugeBytes) blocks.Clear();
        return blocks;
    }

    /// <summary>
    /// Creates a userfaultfd inside the process and returns crisp's copy (the process's own
    /// descriptor is closed again unless <paramref name="keepTaskFd"/>: it must not see an fd it
    /// never had, so a kept one is closed by the caller).
    /// </summary>
    private int TakeUffd(ProcessImage p, RestoreTask leader, out int taskFd, bool keepTaskFd = false)
    {
        taskFd = (int)leader.Check(Code, "userfaultfd", LibC.SYS_userfaultfd, LibC.O_CLOEXEC | LibC.O_NONBLOCK);
        int pidfd = -1;
        bool ok = false;
        try
        {
            pidfd = Errno.Check(LibC.pidfd_open(p.Pid), "pidfd_open", $"process {p.Pid}");
            int fd = Errno.Check(LibC.pidfd_getfd(pidfd, taskFd), "pidfd_getfd", $"uffd {taskFd} of process {p.Pid}");
            ok = true;
            return fd;
        }
        finally
        {
            if (pidfd >= 0) LibC.close(pidfd);
            if (!keepTaskFd || !ok) leader.Call(Code, LibC.SYS_close, taskFd);
        }
    }

    /// <summary>
    /// Moves <paramref name="blocks"/> (pages at Off in the pages file) in as huge pages;
    /// false if the kernel cannot (nothing written then). The kernel refuses UFFDIO_MOVE from
    /// another mm, so the moves are injected into the process on its own uffd descriptor;
    /// crisp's copy of that uffd does the API, register and unregister calls, which it may.
    /// </summary>
    private bool MoveHuge(ProcessImage p, RestoreTask leader, PagemapReader pages, List<(ulong Dst, long Off)> blocks)
    {
        int uffd = TakeUffd(p, leader, out int taskFd, keepTaskFd: true);
        var registered = new List<(ulong Start, ulong End)>();
        ulong staging = 0, stagingLen = 0;
        try
        {
            var api = new LibC.uffdio_api { api = LibC.UFFD_API, features = LibC.UFFD_FEATURE_MOVE };
            if (LibC.ioctl(uffd, LibC.UFFDIO_API, &api) != 0)
            {
                Log.I($"process {p.Pid}: no UFFD_FEATURE_MOVE ({Errno.Name(Errno.Last)}); memory is written page by page");
                return false;
            }
            foreach (var v in p.Mm.Vmas.Where(v => blocks.Any(b => b.Dst >= v.Start && b.Dst < v.End)).OrderBy(v => v.Start))
            {
                var reg = new LibC.uffdio_register { range = new LibC.uffdio_range { start = v.Start, len = v.End - v.Start }, mode = LibC.UFFDIO_REGISTER_MODE_MISSING };
                if (LibC.ioctl(uffd, LibC.UFFDIO_REGISTER, &reg) != 0)
                    throw Errno.Failure("ioctl(UFFDIO_REGISTER)", $"0x{v.Start:x}-0x{v.End:x} in process {p.Pid}");
                registered.Add((v.Start, v.End));
            }

            // NORESERVE keeps the staging area from merging with a restored neighbour.
            stagingLen = StagingSize + HugeSize;
            staging = (ulong)leader.Check(Code, "mmap (huge-page staging area)", LibC.SYS_mmap, 0, (long)stagingLen,
                LibC.PROT_READ | LibC.PROT_WRITE, LibC.MAP_PRIVATE | LibC.MAP_ANONYMOUS | LibC.MAP_NORESERVE, -1, 0);
            ulong stage = (staging + HugeSize - 1) & ~(HugeSize - 1);
            leader.Check(Code, "madvise(MADV_HUGEPAGE) on the staging area", LibC.SYS_madvise, (long)stage, (long)StagingSize, LibC.MADV_HUGEPAGE);

            int batch = (int)(StagingSize / HugeSize);
            var mv = new byte[sizeof(LibC.uffdio_move)];
            var fillTime = new System.Diagnostics.Stopwatch();
            var moveTime = new System.Diagnostics.Stopwatch();
            for (int i = 0; i < blocks.Count; i += batch)
            {
                int n = Math.Min(batch, blocks.Count - i);
                fillTime.Start();
                var fill = new List<PageWriter.Seg>(n);
                for (int k = 0; k < n; k++) fill.Add(new PageWriter.Seg(stage + (ulong)k * HugeSize, blocks[i + k].Off, HugeSize));
                PageWriter.Write(p.Pid, pages, fill);
                fillTime.Stop();
                moveTime.Start();
                // One move per run of consecutive destinations (the staging blocks are consecutive).
                for (int k = 0; k < n;)
                {
                    int j = k + 1;
                    while (j < n && blocks[i + j].Dst == blocks[i + j - 1].Dst + HugeSize) j++;
                    var m = new LibC.uffdio_move { dst = blocks[i + k].Dst, src = stage + (ulong)k * HugeSize, len = (ulong)(j - k) * HugeSize };
                    MemoryMarshal.Write(mv, in m);
                    ulong at = new Scratch(this, p.Pid).Put(mv);
                    long r = leader.Call(Code, LibC.SYS_ioctl, taskFd, unchecked((long)LibC.UFFDIO_MOVE), (long)at);
                    Errno.CheckRaw(r, "ioctl(UFFDIO_MOVE)", $"0x{m.dst:x} (+{m.len >> 20} MiB) in process {p.Pid}");
                    k = j;
                }
                moveTime.Stop();
            }
            Log.D($"process {p.Pid}: huge blocks: staging writes {fillTime.Elapsed.TotalMilliseconds:F1} ms, moves {moveTime.Elapsed.TotalMilliseconds:F1} ms");
            return true;
        }
        finally
        {
            foreach (var (start, end) in registered)
            {
                var range = new LibC.uffdio_range { start = start, len = end - start };
                LibC.ioctl(uffd, LibC.UFFDIO_UNREGISTER, &range);
            }
            if (staging != 0) leader.Call(Code, LibC.SYS_munmap, (long)staging, (long)stagingLen);
            leader.Call(Code, LibC.SYS_close, taskFd);
            LibC.close(uffd);
        }
    }
}
