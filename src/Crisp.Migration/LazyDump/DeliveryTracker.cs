using Crisp.Checkpoint.Dump;
using Crisp.Images.Pages;

namespace Crisp.Migration;

/// <summary>
/// Which of a lazy dump's PE_LAZY pages were handed out at least once: a bitmap per process over
/// its lazy runs. Pages outside the runs (a client may ask for anything) do not count.
/// </summary>
public sealed class DeliveryTracker
{
    private sealed class PerPid(IReadOnlyList<PageRange> runs)
    {
        public readonly PageRange[] Runs = runs.OrderBy(r => r.Vaddr).ToArray();
        public readonly ulong[] FirstIndex = Prefix(runs.OrderBy(r => r.Vaddr).ToArray());
        public ulong[] Bits = [];

        private static ulong[] Prefix(PageRange[] runs)
        {
            var a = new ulong[runs.Length];
            ulong n = 0;
            for (int i = 0; i < runs.Length; i++) { a[i] = n; n += runs[i].NrPages; }
            return a;
        }
    }

    private readonly Dictionary<int, PerPid> _byPid = [];
    private readonly object _lock = new();
    private ulong _delivered;

    public DeliveryTracker(LazyDumpTree tree)
    {
        foreach (var (pid, runs) in tree.LazyRuns)
        {
            var p = new PerPid(runs);
            ulong total = runs.Aggregate(0UL, (s, r) => s + r.NrPages);
            p.Bits = new ulong[(total + 63) / 64];
            _byPid[pid] = p;
        }
        Total = tree.TotalLazyPages;
    }

    public ulong Total { get; }

    public ulong Count { get { lock (_lock) return _delivered; } }

    public bool All => Count >= Total;

    /// <summary>Signalled when the last lazy page was delivered.</summary>
    public ManualResetEventSlim Complete { get; } = new(false);

    public void Mark(int pid, ulong vaddr, ulong nrPages)
    {
        if (!_byPid.TryGetValue(pid, out var p)) return;
        ulong end = vaddr + nrPages * 4096;
        lock (_lock)
        {
            // First run that ends after vaddr.
            int lo = 0, hi = p.Runs.Length;
            while (lo < hi)
            {
                int mid = (lo + hi) / 2;
                if (p.Runs[mid].End <= vaddr) lo = mid + 1; else hi = mid;
            }
            for (int i = lo; i < p.Runs.Length && p.Runs[i].Vaddr < end; i++)
            {
                var r = p.Runs[i];
                ulong s = Math.Max(r.Vaddr, vaddr), e = Math.Min(r.End, end);
                for (ulong a = s; a < e; a += 4096)
                {
                    ulong bit = p.FirstIndex[i] + (a - r.Vaddr) / 4096;
                    ref ulong word = ref p.Bits[bit / 64];
                    ulong mask = 1UL << (int)(bit % 64);
                    if ((word & mask) == 0) { word |= mask; _delivered++; }
                }
            }
            if (_delivered >= Total) Complete.Set();
        }
    }
}
