using Crisp.Images;
using Crisp.Native;

namespace Crisp.LazyPages;

public sealed class LazyPagesOptions
{
    /// <summary>Where <c>lazy-pages.socket</c> is created.</summary>
    public required string WorkDir { get; init; }
    /// <summary>
    /// Where the pages come from; the daemon opens one channel for faults and, when prefetch first
    /// has work, one for prefetch. If that second one is refused (a page server that takes one
    /// connection, as CRIU's lazy one does), prefetch shares the fault channel (SharedPageChannel.cs).
    /// </summary>
    public required IPageSource PageSource { get; init; }
    /// <summary>The plan for a task, by the pid sent in the handshake.</summary>
    public required Func<int, LazyPlan> PlanFor { get; init; }
    /// <summary>If &gt;= 0: a zero byte is written to it and it is closed once the socket listens.</summary>
    public int StatusFd { get; init; } = -1;
    /// <summary>The daemon's log; crisp's own by default.</summary>
    public Logger Log { get; init; } = Logger.Crisp;
    public LazyPagesPolicy Policy { get; init; } = new();
    /// <summary>
    /// How long the daemon waits for a peer that does not come: the page source to answer its
    /// first connection, and a restore to hand over its first process (counted from the start and
    /// from each hand-off connection coming or going). Past it the daemon gives up (Run returns 1).
    /// <see cref="TimeSpan.Zero"/> or <see cref="Timeout.InfiniteTimeSpan"/>: wait forever.
    /// </summary>
    public TimeSpan PeerTimeout { get; init; } = TimeSpan.FromMinutes(5);
    /// <summary>
    /// Working-set prefetch (Prefetch/WorkingSet.cs): a recorded fault order whose pages are
    /// pushed first, per process, from its hand-off on (before restore-finished). Null: none.
    /// </summary>
    public string? PrefetchOrderPath { get; init; }
    /// <summary>Where this run's fault order is written once every page is in. Null: not recorded.</summary>
    public string? RecordOrderPath { get; init; }
}
