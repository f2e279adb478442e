using Crisp.Images;
using Crisp.Images.Pages;
using Crisp.Images.Proto;
using Crisp.Inject;
using Crisp.Native;

namespace Crisp.Checkpoint.Restore;

/// <summary>
/// Private pages a child shares copy-on-write with its parent stay shared after the restore
/// (zdtm cow00, cow01). As CRIU does (criu/mem.c, prepare_cow_vmas), a private VMA of a child is
/// taken as inherited when its parent has a VMA with the same start, end, protection, flags,
/// madvise bits and, for a file mapping, the same file and offset, and both run the same
/// executable. Then the parent's address space is restored before the child is cloned from
/// it (CreateTree), so the child starts with the parent's pages in that VMA; the child keeps the
/// VMA instead of mapping it anew, and of its pages:
///  - a page present in both images with equal bytes is left alone: it stays shared;
///  - a page present in the child's image with other bytes (or absent in the parent's) is written;
///  - a page present in the parent's image but not in the child's is dropped (MADV_DONTNEED:
///    zero for anonymous memory, the file's page for a private file mapping), as the child had it.
/// The bytes each process ends with are what its own image holds, whatever was inherited.
///
/// Not under --lazy-pages: lazy VMAs are registered with a userfaultfd per process and filled
/// by the daemon, so nothing of them exists in the parent to inherit at fork time; each
/// process then gets its pages apart (correct contents, not shared). Not for VMAs that are
/// mlock'ed, hugetlb, MADV_DONTFORK or LibC.MADV_WIPEONFORK (fork does not pass them on as they are).
/// </summary>
internal sealed unsafe partial class RestoreSession
{

    private void FindInheritedVmas()
    {
        if (_o.Lazy)
        {
            if (_c.Procs.Count > 1) Log.D("lazy restore: private memory is restored apart per process (not shared copy-on-write)");
            return;
        }
        foreach (var p in _c.Procs)
        {
            var parent = _c.Procs.FirstOrDefault(x => x.DumpedPid == p.Ppid);
            if (parent == null || parent.Mm.ExeFileId != p.Mm.ExeFileId) continue;
            var theirs = parent.Mm.Vmas.Where(CanInherit).ToDictionary(v => v.Start);
            var mine = new Dictionary<ulong, VmaEntry>();
            foreach (var v in p.Mm.Vmas.Where(CanInherit))
                if (theirs.TryGetValue(v.Start, out var pv) && SameVma(v, pv))
                    mine[v.Start] = v;
            if (mine.Count == 0) continue;
            _c.Inherited[p.DumpedPid] = mine;
            _c.CowParents.Add(parent.DumpedPid);
            Log.D($"process {p.DumpedPid}: {mine.Count} private VMAs may share pages with its parent {parent.DumpedPid}");
        }
    }

    private static bool CanInherit(VmaEntry v)
    {
        const uint kinds = VmaStatus.VMA_ANON_PRIVATE | VmaStatus.VMA_FILE_PRIVATE;
        const uint refused = VmaStatus.VMA_AREA_VDSO | VmaStatus.VMA_AREA_VVAR | VmaStatus.VMA_AREA_VSYSCALL |
                             VmaStatus.VMA_AREA_SYSVIPC | VmaStatus.VMA_AREA_SOCKET | VmaStatus.VMA_AREA_AIORING | VmaStatus.VMA_ANON_SHARED | VmaStatus.VMA_FILE_SHARED;
        if ((v.Status & kinds) == 0 || (v.Status & refused) != 0) return false;
        if ((v.Flags & (LibC.MAP_SHARED | LibC.MAP_LOCKED | LibC.MAP_HUGETLB)) != 0) return false;
        const ulong notForked = (1UL << LibC.MADV_DONTFORK) | (1UL << LibC.MADV_WIPEONFORK);
        return (v.Madv & notForked) == 0;
    }

    private static bool SameVma(VmaEntry v, VmaEntry pv) =>
        v.End == pv.End && v.Prot == pv.Prot && v.Flags == pv.Flags && v.Status == pv.Status && v.Madv == pv.Madv &&
        ((v.Status & VmaStatus.VMA_FILE_PRIVATE) == 0 || (v.Shmid == pv.Shmid && v.Pgoff == pv.Pgoff));

    private bool IsInherited(ProcessImage p, VmaEntry v) =>
        _c.Inherited.TryGetValue(p.DumpedPid, out var m) && m.ContainsKey(v.Start);

    /// <summary>Before a child of a parent it shares memory with is cloned: the parent's address space first.</summary>
    private void BeforeCloning(int dumpedParent)
    {
        if (!_c.CowParents.Contains(dumpedParent) || _c.AddressSpaces.ContainsKey(dumpedParent)) return;
        string step = _c.CurrentStep;
        RunSteps(AddressSpaceSteps(_c.Procs.First(x => x.DumpedPid == dumpedParent)));
        _c.CurrentStep = step;
    }

    /// <summary>Ranges a child cloned from a restored parent keeps: its inherited VMAs.</summary>
    private List<(ulong Start, ulong End)> KeptRanges(ProcessImage p) =>
        _c.Inherited.TryGetValue(p.DumpedPid, out var m) ? m.Values.Select(v => (v.Start, v.End)).OrderBy(r => r.Start).ToList() : [];

    /// <summary>Unmaps [start, end) except the kept ranges.</summary>
    private void UnmapExcept(RestoreTask leader, ulong start, ulong end, List<(ulong Start, ulong End)> keep)
    {
        ulong a = start;
        foreach (var (ks, ke) in keep)
        {
            if (ke <= a || ks >= end) continue;
            if (ks > a) leader.Check(Code, "munmap", LibC.SYS_munmap, (long)a, (long)(ks - a));
            a = Math.Max(a, ke);
        }
        if (a < end) leader.Check(Code, "munmap", LibC.SYS_munmap, (long)a, (long)(end - a));
    }

    /// <summary>
    /// The pages of the inherited VMAs: written where they differ from the parent's image, dropped
    /// where only the parent had one, left shared where both images hold the same bytes.
    /// </summary>
    private void WriteInheritedPages(ProcessImage p, PagemapReader? pm)
    {
        if (!_c.Inherited.TryGetValue(p.DumpedPid, out var vmas)) return;
        var parent = _c.Procs.First(x => x.DumpedPid == p.Ppid);
        using var ppm = _c.Dir.Exists(Crisp.Images.ImageDir.PagemapName(parent.DumpedPid)) ? _c.Dir.OpenPagemap(parent.DumpedPid) : null;
        var leader = _c.Tasks[p.Pid];
        using var mem = new ProcMem(p.Pid);
        const int Page = PagemapRun.PageSize, Batch = 64;
        var mine = new byte[Page * Batch];
        var theirs = new byte[Page];
        long shared = 0, written = 0, dropped = 0;
        foreach (var v in vmas.Values.OrderBy(v => v.Start))
        {
            ulong dropFrom = 0, dropTo = 0;
            void Drop()
            {
                if (dropTo > dropFrom)
                    leader.Check(Code, $"madvise(0x{dropFrom:x}, MADV_DONTNEED)", LibC.SYS_madvise, (long)dropFrom, (long)(dropTo - dropFrom), LibC.MADV_DONTNEED);
                dropFrom = dropTo = 0;
            }
            for (ulong a = v.Start; a < v.End;)
            {
                bool inMine = pm != null && pm.IsPresent(a), inTheirs = ppm != null && ppm.IsPresent(a);
                if (!inMine)
                {
                    if (inTheirs)
                    {
                        if (dropTo != a) { Drop(); dropFrom = a; }
                        dropTo = a + Page;
                        dropped++;
                    }
                    a += Page;
                    continue;
                }
                Drop();
                // A stretch of pages present in the child's image, read at once; each compared with the parent's.
                int n = 1;
                while (n < Batch && a + (ulong)(n * Page) < v.End && pm!.IsPresent(a + (ulong)(n * Page))) n++;
                pm!.Read(a, mine.AsSpan(0, n * Page));
                int runStart = -1;
                for (int i = 0; i <= n; i++)
                {
                    bool differs = false;
                    if (i < n)
                    {
                        ulong at = a + (ulong)(i * Page);
                        differs = true;
                        if (ppm != null && ppm.IsPresent(at))
                        {
                            ppm.Read(at, theirs);
                            differs = !theirs.AsSpan().SequenceEqual(mine.AsSpan(i * Page, Page));
                        }
                        if (!differs) shared++;
                    }
                    if (differs && runStart < 0) runStart = i;
                    if (!differs && runStart >= 0)
                    {
                        // /proc/PID/mem: writes whatever the protection, breaking the sharing of just these pages.
                        mem.Write(a + (ulong)(runStart * Page), mine.AsSpan(runStart * Page, (i - runStart) * Page));
                        written += i - runStart;
                        runStart = -1;
                    }
                }
                a += (ulong)(n * Page);
            }
            Drop();
        }
        Log.D($"process {p.Pid}: inherited memory: {shared} pages shared with the parent, {written} written, {dropped} dropped");
    }
}
