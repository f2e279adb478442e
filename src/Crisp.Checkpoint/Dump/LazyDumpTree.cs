using Crisp.Images.Pages;

namespace Crisp.Checkpoint.Dump;

/// <summary>
/// A lazily dumped tree, still frozen: which pages of which process the page server must deliver
/// (<see cref="LazyRuns"/>: the runs dumped as PE_LAZY, their bytes still in the frozen process).
/// </summary>
public sealed record LazyDumpTree(IReadOnlyList<int> Pids, IReadOnlyDictionary<int, IReadOnlyList<PageRange>> LazyRuns)
{
    public ulong TotalLazyPages => LazyRuns.Values.SelectMany(r => r).Aggregate(0UL, (s, r) => s + r.NrPages);

    /// <summary>
    /// Pids and LazyRuns are keyed by the pids the images carry (as the tree sees them, which differ
    /// from crisp's when the tree owns its pid namespace); this maps them to the pids here. Absent: the same.
    /// </summary>
    public IReadOnlyDictionary<int, int>? HostPids { get; init; }

    /// <summary>The pid here of the process the images call <paramref name="dumpedPid"/>.</summary>
    public int HostPid(int dumpedPid) => HostPids is { } m && m.TryGetValue(dumpedPid, out int h) ? h : dumpedPid;
}
