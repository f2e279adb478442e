namespace Crisp.Checkpoint.Dump;

/// <summary>What a dump did, for the log and the command's summary.</summary>
public sealed record DumpResult(int Processes, int Threads, ulong PagesWritten, TimeSpan Frozen, TimeSpan Total)
{
    /// <summary>Incremental dumps: pages written as PE_PARENT (their bytes are in the parent images).</summary>
    public ulong ParentPages { get; init; }

    /// <summary>Lazy dumps: pages left in the frozen processes for the page server (PE_LAZY entries).</summary>
    public ulong LazyPages { get; init; }

    /// <summary>Lazy dumps: how the serving ended.</summary>
    public LazyDumpEnd? LazyEnd { get; init; }

    /// <summary>CLOCK_REALTIME (ns) when the freeze began (before the first seize) and when the tree ran again (0: it did not).</summary>
    public long FreezeStartUnixNs { get; init; }

    /// <summary>See <see cref="FreezeStartUnixNs"/>.</summary>
    public long ResumedUnixNs { get; init; }

    /// <summary>Now on CLOCK_REALTIME in ns, to set timestamps others (a workload's log) can be compared with.</summary>
    public static long UnixNowNs() => (DateTime.UtcNow - DateTime.UnixEpoch).Ticks * 100;
}
