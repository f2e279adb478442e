using Crisp.Images;

namespace Crisp.LazyPages;

/// <summary>How much to bring in at once. Defaults chosen from measurements (docs/LAZY-PAGES.md).</summary>
public sealed class LazyPagesPolicy
{
    /// <summary>Pages copied for an isolated fault: the aligned block around it (fault-around).</summary>
    public int FaultAroundPages { get; set; } = 16;
    /// <summary>Largest window when faults run sequentially (each fault right after the last window doubles it).</summary>
    public int SequentialMaxPages { get; set; } = 256;
    /// <summary>Pages a fault outside the image's data answers with zeros (forward from the fault, never over pending pages).</summary>
    public int ZeroAroundPages { get; set; } = 16;
    /// <summary>Pages per background UFFDIO_COPY.</summary>
    public int PrefetchChunkPages { get; set; } = 128;
    /// <summary>
    /// Pages per prefetch request when prefetch shares the fault channel (the page source took one
    /// connection only, as CRIU's lazy page server does): small, so a fault waits at most one of them.
    /// </summary>
    public int SharedChannelPrefetchPages { get; set; } = 32;
    /// <summary>Start background prefetch only after the restore-finished word (CRIU's behaviour).</summary>
    public bool PrefetchAfterRestoreFinished { get; set; } = true;
    /// <summary>
    /// How long background prefetch waits once it may begin (working-set recording: what the
    /// process touches in that time comes by fault and is recorded, Prefetch/WorkingSet.cs). Zero: no wait.
    /// </summary>
    public TimeSpan PrefetchHold { get; set; } = TimeSpan.Zero;
    /// <summary>
    /// When the page source fails: kill the process instead of poisoning what it has not got.
    /// (Poisoning lets it live until it touches a lost page; on this kernel UFFDIO_POISON works even
    /// when UFFD_FEATURE_POISON was not asked for, so killing is a policy choice, not a fallback only.)
    /// </summary>
    public bool KillOnFailure { get; set; }
}

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
    public Action<string> Log { get; init; } = Console.Error.WriteLine;
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

public static class LazyPagesSetup
{
    /// <summary>
    /// Options for serving from a local images directory (<c>crisp lazy-pages -D DIR [-W DIR]</c>):
    /// plans from mm-PID.img + pagemap-PID.img, pages from pages-N.img. The work directory defaults
    /// to the images directory, like CRIU's. The prefetch order defaults to
    /// <see cref="WorkingSet.FileName"/> beside the images when that file exists; "" turns it off.
    /// </summary>
    public static LazyPagesOptions ForImages(string imagesDir, string? workDir = null, int statusFd = -1,
        Action<string>? log = null, LazyPagesPolicy? policy = null, TimeSpan? peerTimeout = null, string? prefetchOrder = null,
        string? recordOrder = null)
    {
        var dir = new ImageDir(imagesDir);
        return new LazyPagesOptions
        {
            WorkDir = workDir ?? imagesDir,
            PageSource = new ImagePageSource(dir),
            PlanFor = pid => LocalImages.Plan(dir, pid),
            StatusFd = statusFd,
            Log = log ?? Console.Error.WriteLine,
            Policy = policy ?? new LazyPagesPolicy(),
            PeerTimeout = peerTimeout ?? TimeSpan.FromMinutes(5),
            PrefetchOrderPath = prefetchOrder ?? DefaultPrefetchOrder(imagesDir),
            RecordOrderPath = recordOrder,
        };
    }

    /// <summary>The recorded order beside the images, if there is one (read automatically).</summary>
    public static string? DefaultPrefetchOrder(string imagesDir)
    {
        string path = Path.Combine(imagesDir, WorkingSet.FileName);
        return File.Exists(path) ? path : null;
    }
}
