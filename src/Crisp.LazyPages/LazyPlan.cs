using Crisp.Images.Pages;

namespace Crisp.LazyPages;

/// <summary>
/// What the daemon must deliver for one dumped task: its lazy VMAs and, inside them, the runs that
/// have data in the image. Pages of a lazy VMA outside those runs are answered with zeros (they were
/// never touched, or were zero). <see cref="ImagePid"/> is the pid the page source knows the task by.
/// </summary>
public sealed class LazyPlan
{
    public int ImagePid { get; }
    public IReadOnlyList<LazyVma> Vmas { get; }
    public IReadOnlyList<PageRange> DataRuns { get; }

    public LazyPlan(int imagePid, IEnumerable<LazyVma> vmas, IEnumerable<PageRange> dataRuns)
    {
        ImagePid = imagePid;
        Vmas = vmas.OrderBy(v => v.Start).ToArray();
        DataRuns = dataRuns.Where(r => r.NrPages > 0).OrderBy(r => r.Vaddr).ToArray();
        foreach (var v in Vmas)
            if ((v.Start | v.End) % 4096 != 0 || v.End <= v.Start) throw new ArgumentException($"bad lazy VMA {v}");
        foreach (var r in DataRuns)
            if (r.Vaddr % 4096 != 0) throw new ArgumentException($"pagemap run at {r.Vaddr:x} is not page aligned");
    }

    /// <summary>
    /// The pending set: data runs clipped to lazy VMAs. Data outside any lazy VMA is not ours to fill.
    /// Runs of neighbouring VMAs may merge here; the copy path splits a copy that crosses a VMA
    /// boundary when the kernel says ENOENT (VMAs split at run time anyway, e.g. by mprotect).
    /// </summary>
    public PageRangeSet ToPending()
    {
        var set = new PageRangeSet();
        int v = 0;
        foreach (var run in DataRuns)
        {
            while (v < Vmas.Count && Vmas[v].End <= run.Vaddr) v++;
            for (int j = v; j < Vmas.Count && Vmas[j].Start < run.End; j++)
            {
                ulong s = Math.Max(run.Vaddr, Vmas[j].Start), e = Math.Min(run.End, Vmas[j].End);
                if (s < e) set.Add(new PendingRange(s, e, s));
            }
        }
        return set;
    }

    public long DataPages => DataRuns.Sum(r => (long)r.NrPages);
    public long LazyPages => Vmas.Sum(v => (long)((v.End - v.Start) >> 12));

    public override string ToString() => $"plan for {ImagePid}: {Vmas.Count} lazy VMAs ({LazyPages} pages), {DataRuns.Count} data runs ({DataPages} pages)";
}
