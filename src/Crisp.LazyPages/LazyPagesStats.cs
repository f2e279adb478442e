using System.Diagnostics;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Crisp.LazyPages;

/// <summary>What the daemon did. Counters are updated by the fault loop and the prefetch worker.</summary>
public sealed class LazyPagesStats
{
    private long _faults, _faultPages, _faultAroundPages, _prefetchPages, _zeroPages, _existPages,
        _poisonedPages, _bytes, _copies, _processes, _forks, _eagain, _workingSetPages;
    private readonly object _latencyLock = new();
    private readonly List<long> _latencyTicks = new();
    private readonly long _started = Stopwatch.GetTimestamp();
    private long _finished;

    /// <summary>Page faults answered (one per uffd PAGEFAULT message).</summary>
    public long Faults => Volatile.Read(ref _faults);
    /// <summary>Faulting pages filled with data by UFFDIO_COPY.</summary>
    public long FaultPages => Volatile.Read(ref _faultPages);
    /// <summary>Extra pages copied alongside a faulting page (fault-around / sequential window).</summary>
    public long FaultAroundPages => Volatile.Read(ref _faultAroundPages);
    /// <summary>Pages pushed by the background prefetch worker.</summary>
    public long PrefetchPages => Volatile.Read(ref _prefetchPages);
    /// <summary>Faults answered with UFFDIO_ZEROPAGE (page not in the image, or dropped by REMOVE/UNMAP).</summary>
    public long ZeroPages => Volatile.Read(ref _zeroPages);
    /// <summary>Pages the working-set push took first, in the recorded order (Prefetch/WorkingSet.cs); part of <see cref="PrefetchPages"/>.</summary>
    public long WorkingSetPages => Volatile.Read(ref _workingSetPages);
    /// <summary>Pages found already present (EEXIST): filled by someone else, counted, not an error.</summary>
    public long ExistPages => Volatile.Read(ref _existPages);
    /// <summary>Pages poisoned (UFFDIO_POISON) because the page source failed.</summary>
    public long PoisonedPages => Volatile.Read(ref _poisonedPages);
    /// <summary>Bytes moved by UFFDIO_COPY.</summary>
    public long Bytes => Volatile.Read(ref _bytes);
    /// <summary>UFFDIO_COPY calls that moved data.</summary>
    public long Copies => Volatile.Read(ref _copies);
    public long Processes => Volatile.Read(ref _processes);
    public long Forks => Volatile.Read(ref _forks);
    /// <summary>EAGAIN answers from the kernel (events pending), retried.</summary>
    public long EagainRetries => Volatile.Read(ref _eagain);

    public TimeSpan Elapsed => Stopwatch.GetElapsedTime(_started, _finished != 0 ? _finished : Stopwatch.GetTimestamp());

    internal void Fault() => Interlocked.Increment(ref _faults);
    internal void Copied(long faultPages, long aroundPages, long prefetchPages, long bytes)
    {
        if (faultPages != 0) Interlocked.Add(ref _faultPages, faultPages);
        if (aroundPages != 0) Interlocked.Add(ref _faultAroundPages, aroundPages);
        if (prefetchPages != 0) Interlocked.Add(ref _prefetchPages, prefetchPages);
        Interlocked.Add(ref _bytes, bytes);
        Interlocked.Increment(ref _copies);
    }
    internal void Zeroed(long pages) => Interlocked.Add(ref _zeroPages, pages);
    internal void Existed(long pages) => Interlocked.Add(ref _existPages, pages);
    internal void Poisoned(long pages) => Interlocked.Add(ref _poisonedPages, pages);
    internal void ProcessAdded() => Interlocked.Increment(ref _processes);
    internal void Forked() => Interlocked.Increment(ref _forks);
    internal void Eagain() => Interlocked.Increment(ref _eagain);
    internal void WorkingSet(long pages) => Interlocked.Add(ref _workingSetPages, pages);
    internal void Finish() => _finished = Stopwatch.GetTimestamp();

    internal void FaultLatency(long ticks)
    {
        lock (_latencyLock) _latencyTicks.Add(ticks);
    }

    /// <summary>Fault latency percentile (0..100) in microseconds: from reading the fault to the page being in.</summary>
    public double LatencyPercentileMicros(double percentile)
    {
        long[] a;
        lock (_latencyLock) a = _latencyTicks.ToArray();
        if (a.Length == 0) return 0;
        Array.Sort(a);
        int i = (int)Math.Ceiling(percentile / 100.0 * a.Length) - 1;
        i = Math.Clamp(i, 0, a.Length - 1);
        return a[i] * 1_000_000.0 / Stopwatch.Frequency;
    }

    public LazyPagesReport ToReport() => new()
    {
        Processes = Processes, Forks = Forks, Faults = Faults, FaultPages = FaultPages,
        FaultAroundPages = FaultAroundPages, PrefetchPages = PrefetchPages, WorkingSetPages = WorkingSetPages, ZeroPages = ZeroPages,
        ExistPages = ExistPages, PoisonedPages = PoisonedPages, Bytes = Bytes, Copies = Copies,
        EagainRetries = EagainRetries, ElapsedSeconds = Elapsed.TotalSeconds,
        FaultLatencyP50Micros = Math.Round(LatencyPercentileMicros(50), 1),
        FaultLatencyP99Micros = Math.Round(LatencyPercentileMicros(99), 1),
    };

    public string ToJson() => JsonSerializer.Serialize(ToReport(), LazyPagesJsonContext.Default.LazyPagesReport);

    public override string ToString()
    {
        var r = ToReport();
        var sb = new StringBuilder();
        double mib = r.Bytes / 1048576.0;
        sb.AppendLine($"lazy-pages: {r.Processes} process(es), {r.Forks} fork(s), {r.ElapsedSeconds:F3} s");
        sb.AppendLine($"  faults:        {r.Faults} (latency p50 {r.FaultLatencyP50Micros:F1} us, p99 {r.FaultLatencyP99Micros:F1} us)");
        sb.AppendLine($"  pages by fault {r.FaultPages}, by fault-around {r.FaultAroundPages}, by prefetch {r.PrefetchPages} (working set first {r.WorkingSetPages}), zero {r.ZeroPages}");
        sb.AppendLine($"  already there  {r.ExistPages}, poisoned {r.PoisonedPages}, EAGAIN retries {r.EagainRetries}");
        sb.Append($"  copied         {mib:F1} MiB in {r.Copies} UFFDIO_COPY calls");
        if (r.ElapsedSeconds > 0) sb.Append($" ({mib / r.ElapsedSeconds:F0} MiB/s over the run)");
        return sb.ToString();
    }
}
