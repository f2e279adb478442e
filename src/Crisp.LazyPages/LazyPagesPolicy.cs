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
