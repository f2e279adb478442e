using Crisp.Images;
using Crisp.Images.Proto;
using Crisp.Native;

namespace Crisp.Checkpoint.Restore;

/*
 * Lazy restore (crisp restore --lazy-pages), the restorer's half.
 *
 * The VMAs LazyVmas.IsLazy picks (private anonymous, not locked, not hugetlb, not vdso/vvar)
 * are mapped empty and get none of their pages from us; the lazy-pages daemon fills them on
 * fault and in the background. Per process (threads share the mm):
 *
 *   1. right after the VMAs are mapped, an injected userfaultfd(O_CLOEXEC|O_NONBLOCK) makes the
 *      uffd inside the task, so its context belongs to the task's mm;
 *   2. crisp takes it with pidfd_getfd and closes the task's own descriptor (the restored
 *      process must not see an fd it never had);
 *   3. UFFDIO_API and UFFDIO_REGISTER(MISSING) are issued from crisp on the taken fd: both act on
 *      the creator's mm, so the addresses are the task's;
 *   4. the pid and the uffd go to the daemon at once (CRIU's hand-off: the pid as a 32-bit
 *      word, then the fd in a second message with a one-byte payload; both ends of that protocol
 *      are in Crisp.Native/HandOff/LazyHandOff.cs), and crisp closes its
 *      copy: the daemon must hold the only reference, or ranges it drops would stay registered
 *      (and fault forever) after it exits.
 *
 * Why the hand-off comes this early, before the rest of the restore: from the moment the ranges
 * are registered, anything that touches them, user or kernel, waits for the uffd's reader. The
 * rest of the sequence makes the kernel write into the task's memory (rseq's cpu_id on the way
 * back to user mode, for one; the rseq area lives in TLS, which is lazy memory) and an
 * unanswered fault there would hang the restore. With the daemon holding the uffd such a fault
 * is simply served. The daemon starts its background prefetch only after the restore-finished
 * word, which we send once every task runs and crisp has nothing left to do but exit: the
 * prefetch takes both CPUs at once, and would otherwise slow the end of the restore.
 *
 * Nothing here reads a pages image: the restore's cost on the lazy path is one register call
 * per lazy VMA, whatever the memory size.
 */

internal sealed unsafe partial class RestoreSession
{

    private bool IsLazyVma(VmaEntry v) => _o.Lazy && LazyVmas.IsLazy(v);

    /// <summary>Sends restore-finished and closes the hand-off connection (the very last step of a lazy restore).</summary>
    public void FinishLazy()
    {
        if (_c.Lazy == null) return;
        try { _c.Lazy.Finish(); }
        finally { _c.Lazy.Dispose(); _c.Lazy = null; }
    }

    private void ConnectLazyPages()
    {
        _c.Lazy = LazyHandOffConnection.Connect(_o.WorkDir ?? _o.ImagesDir);
    }

    /// <summary>Steps 1–4 of the comment above for one process; a process without lazy VMAs gets no uffd.</summary>
    private void RegisterLazy(ProcessImage p, RestoreTask leader)
    {
        var ranges = new List<(ulong Start, ulong End)>();
        foreach (var v in p.Mm.Vmas.Where(IsLazyVma).OrderBy(v => v.Start))
        {
            // Neighbouring lazy VMAs are registered together (the kernel takes a range over several VMAs).
            if (ranges.Count > 0 && ranges[^1].End == v.Start) ranges[^1] = (ranges[^1].Start, v.End);
            else ranges.Add((v.Start, v.End));
        }
        if (ranges.Count == 0) return;

        int uffd = TakeUffd(p, leader, out _);
        try
        {
            ApiHandshake(uffd, p.Pid);
            foreach (var (start, end) in ranges)
            {
                var reg = new LibC.uffdio_register { range = new LibC.uffdio_range { start = start, len = end - start }, mode = LibC.UFFDIO_REGISTER_MODE_MISSING };
                if (LibC.ioctl(uffd, LibC.UFFDIO_REGISTER, &reg) != 0)
                    throw Errno.Failure("ioctl(UFFDIO_REGISTER)", $"0x{start:x}-0x{end:x} in process {p.Pid}");
            }
            _c.Lazy!.Send(p.Pid, uffd);
        }
        finally
        {
            LibC.close(uffd);
        }
    }

    /// <summary>
    /// UFFDIO_API with the events the daemon follows (FORK, REMAP, REMOVE, UNMAP) and POISON, which
    /// lets it turn pages it cannot deliver into SIGBUS. A refused API call leaves the uffd
    /// uninitialised, so it is tried again without POISON on a kernel that lacks it.
    /// </summary>
    private static void ApiHandshake(int uffd, int pid)
    {
        const ulong events = LibC.UFFD_FEATURE_EVENT_FORK | LibC.UFFD_FEATURE_EVENT_REMAP |
                             LibC.UFFD_FEATURE_EVENT_REMOVE | LibC.UFFD_FEATURE_EVENT_UNMAP;
        var api = new LibC.uffdio_api { api = LibC.UFFD_API, features = events | LibC.UFFD_FEATURE_POISON };
        if (LibC.ioctl(uffd, LibC.UFFDIO_API, &api) == 0) return;
        api = new LibC.uffdio_api { api = LibC.UFFD_API, features = events };
        if (LibC.ioctl(uffd, LibC.UFFDIO_API, &api) != 0)
            throw Errno.Failure("ioctl(UFFDIO_API)", $"uffd of process {pid} (events FORK|REMAP|REMOVE|UNMAP)");
        Log.W($"process {pid}: this kernel has no UFFD_FEATURE_POISON; the lazy-pages daemon will kill it if pages are lost");
    }
}
