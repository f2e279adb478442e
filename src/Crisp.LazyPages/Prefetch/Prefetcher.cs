using Crisp.Native;
using System.Runtime.InteropServices;
using Crisp.Images;

namespace Crisp.LazyPages;

/// <summary>
/// Background prefetch: one worker thread copies what no fault has asked for, in big chunks, round
/// robin over the processes, on a page-source channel of its own (pipelined when the source is a
/// remote page server) or, when the source takes one connection only, sharing the fault channel
/// (SharedPageChannel.cs). What it reads is claimed first: out of Pending, so faults on it wait
/// for the chunk instead of racing it (ordering rules: LazyPagesDaemon.cs).
/// </summary>
internal sealed unsafe class Prefetcher
{
    private const int PageSize = 4096;
    /// <summary>Chunks a pipelined prefetch keeps requested ahead of the one being copied.</summary>
    private const int PipelineDepth = 3;

    private readonly LazyPagesPolicy _policy;
    private readonly IPageSource _source;
    private readonly SharedPageChannel _shared;
    private readonly ServedProcesses _served;
    private readonly PageCopier _copier;
    private readonly FailurePolicy _failures;
    private readonly WakePipe _wake;
    private readonly ManualResetEventSlim _kick;
    private readonly Logger _log;
    private readonly LazyPagesStats _stats;
    private readonly Thread _thread;
    private volatile bool _released, _stopping;
    /// <summary>Stopwatch ticks before which released prefetch still waits (LazyPagesPolicy.PrefetchHold).</summary>
    private long _releaseAt;

    public Prefetcher(LazyPagesPolicy policy, IPageSource source, SharedPageChannel shared, ServedProcesses served,
        PageCopier copier, FailurePolicy failures, WakePipe wake, ManualResetEventSlim kick, LazyPagesStats stats, Logger log)
    {
        _stats = stats;
        _policy = policy;
        _source = source;
        _shared = shared;
        _served = served;
        _copier = copier;
        _failures = failures;
        _wake = wake;
        _kick = kick;
        _log = log;
        _released = !policy.PrefetchAfterRestoreFinished;
        _thread = new Thread(Loop) { IsBackground = true, Name = "lazy-pages prefetch" };
    }

    /// <summary>Set when the worker stopped on an error; the poll loop then poisons what is left.</summary>
    public Exception? Failure { get; private set; }

    /// <summary>Whether prefetch reads through the fault channel (the source took one connection only).</summary>
    public bool SharesFaultChannel { get; private set; }

    public void Start() => _thread.Start();

    /// <summary>Prefetch may begin (restore-finished came, or no more tasks can arrive).</summary>
    public void Release()
    {
        if (_released) return;
        if (_policy.PrefetchHold > TimeSpan.Zero)
            Volatile.Write(ref _releaseAt, System.Diagnostics.Stopwatch.GetTimestamp() + (long)(_policy.PrefetchHold.TotalSeconds * System.Diagnostics.Stopwatch.Frequency));
        _released = true;
        _kick.Set();
    }

    public void StopAndJoin()
    {
        _stopping = true;
        _kick.Set();
        if (_thread.IsAlive) _thread.Join();
    }

    private void Loop()
    {
        IPageChannel? channel = null;
        byte* buf = null;
        int chunkPages = Math.Max(1, _policy.PrefetchChunkPages);
        try
        {
            buf = (byte*)NativeMemory.AlignedAlloc((nuint)chunkPages * PageSize, PageSize);
            int rr = 0;
            while (!_stopping)
            {
                // Before restore-finished only a recorded working set is pushed (WorkingSet.cs):
                // it must be in before the process resumes and touches it.
                bool wsOnly = !_released || System.Diagnostics.Stopwatch.GetTimestamp() < Volatile.Read(ref _releaseAt);
                var procs = _served.All;
                LazyProcess? p = null;
                for (int i = 0; i < procs.Length; i++)
                {
                    var q = procs[(rr + i) % procs.Length];
                    if (q.Gone || q.Failed) continue;
                    if (wsOnly ? q.HasWorkingSetLeft : !q.Pending.IsEmpty) { p = q; rr = (rr + i + 1) % procs.Length; break; }
                }
                if (p == null)
                {
                    _kick.Wait(wsOnly ? 50 : 20);
                    _kick.Reset();
                    continue;
                }
                // Opened when there is work, long after the fault channel connected: a server that
                // takes one connection has closed its listening socket by then and refuses this one.
                channel ??= OpenChannel(ref chunkPages);
                if (channel is IPipelinedPageChannel pipe) PrefetchPipelined(pipe, buf, chunkPages, ref rr, wsOnly);
                else PrefetchOne(p, channel, buf, chunkPages, wsOnly);
            }
        }
        catch (Exception e)
        {
            // the poll loop sees this and poisons what is left: without prefetch nothing completes
            Failure = e;
            _wake.Signal();
        }
        finally
        {
            channel?.Dispose();
            if (buf != null) NativeMemory.AlignedFree(buf);
        }
    }

    private IPageChannel OpenChannel(ref int chunkPages)
    {
        try
        {
            return _source.OpenChannel();
        }
        catch (PageSourceException e)
        {
            chunkPages = Math.Clamp(_policy.SharedChannelPrefetchPages, 1, chunkPages);
            SharesFaultChannel = true;
            _log.I($"lazy-pages: the page source refused a second connection ({e.Message}); faults and prefetch share one " +
                 $"(CRIU's lazy page server accepts exactly one), prefetch asking for {chunkPages} pages at a time");
            return _shared.Bulk;
        }
    }

    /// <summary>
    /// Prefetch over a channel that pipelines (a remote page server): up to
    /// <see cref="PipelineDepth"/> chunks are claimed and requested ahead, so the server reads and
    /// sends the next chunks while this thread copies the current one. Returns when nothing is
    /// left to claim and every answer is in, or on stop. Claims work as in
    /// <see cref="PrefetchOne"/>: a fault on a claimed range waits for its chunk.
    /// </summary>
    private void PrefetchPipelined(IPipelinedPageChannel channel, byte* buf, int chunkPages, ref int rr, bool wsOnly)
    {
        var inflight = new Queue<(LazyProcess P, PendingRange Chunk, PageRangeSet Claim)>();
        try
        {
            while (!_stopping)
            {
                while (inflight.Count < PipelineDepth && !_stopping)
                {
                    var next = ClaimNext(chunkPages, ref rr, wsOnly);
                    if (next is not { } c) break;
                    channel.Request(c.P.SourcePid, c.Chunk.ImageStart, (int)(c.Chunk.Length / PageSize));
                    inflight.Enqueue(c);
                }
                if (inflight.Count == 0) return;
                var (p, chunk, claim) = inflight.Peek();
                channel.Receive(p.SourcePid, chunk.ImageStart, new Span<byte>(buf, (int)chunk.Length));
                inflight.Dequeue();
                if (FinishChunk(p, chunk, claim, buf)) _wake.Signal();
            }
        }
        catch (PageSourceException e)
        {
            // The channel is gone with every answer still due: give those ranges back and fail their processes.
            bool wake = false;
            foreach (var (p, chunk, claim) in inflight) wake |= GiveBack(p, chunk, claim, e.Message);
            if (wake) _wake.Signal();
        }
    }

    /// <summary>Claims the next prefetch chunk of the next process with pages left (round robin), or null.</summary>
    private (LazyProcess P, PendingRange Chunk, PageRangeSet Claim)? ClaimNext(int chunkPages, ref int rr, bool wsOnly)
    {
        var procs = _served.All;
        for (int i = 0; i < procs.Length; i++)
        {
            var p = procs[(rr + i) % procs.Length];
            if (ClaimChunk(p, chunkPages, wsOnly) is not { } c) continue;
            rr = (rr + i + 1) % procs.Length;
            return (p, c.Chunk, c.Claim);
        }
        return null;
    }

    /// <summary>
    /// Takes the next chunk of <paramref name="p"/>'s pending pages out of Pending and into a claim
    /// (a fault on it waits for the chunk), or null if none is left: the recorded working set
    /// first, in its order, then (unless <paramref name="wsOnly"/>) what is at the prefetch hint.
    /// </summary>
    private (PendingRange Chunk, PageRangeSet Claim)? ClaimChunk(LazyProcess p, int chunkPages, bool wsOnly)
    {
        lock (p.Gate)
        {
            if (p.Gone || p.Failed) return null;
            if (ClaimWorkingSet(p, chunkPages) is { } ws) return ws;
            if (wsOnly) return null;
            var first = p.Pending.FirstAtOrAfter(p.PrefetchHint);
            if (first == null) return null;
            var r = first.Value;
            ulong start = r.Contains(p.PrefetchHint) ? p.PrefetchHint : r.Start;
            var chunk = r.Clip(start, start + (ulong)chunkPages * PageSize)!.Value;
            p.Pending.Remove(chunk.Start, chunk.End);
            var claim = new PageRangeSet([chunk]);
            p.Claims.Add(claim);
            p.PrefetchHint = chunk.End;
            return (chunk, claim);
        }
    }

    /// <summary>
    /// The next piece of the recorded working set still pending, in the recorded order (at most
    /// one chunk, inside one pending range), claimed; null once the set is used up. Pages already
    /// delivered or claimed (a fault got there first) are skipped, so nothing is served twice. Caller holds Gate.
    /// </summary>
    private (PendingRange Chunk, PageRangeSet Claim)? ClaimWorkingSet(LazyProcess p, int chunkPages)
    {
        var ws = p.WorkingSet;
        while (ws != null && p.WorkingSetAt < ws.Count)
        {
            var (s, e) = ws[p.WorkingSetAt];
            var first = p.Pending.FirstAtOrAfter(s);
            if (first is not { } r || r.End <= s || r.Start >= e) { p.WorkingSetAt++; continue; }
            ulong start = Math.Max(r.Start, s);
            var chunk = r.Clip(start, Math.Min(e, start + (ulong)chunkPages * PageSize))!.Value;
            if (chunk.End >= e) p.WorkingSetAt++;
            else ws[p.WorkingSetAt] = (chunk.End, e);
            p.Pending.Remove(chunk.Start, chunk.End);
            var claim = new PageRangeSet([chunk]);
            p.Claims.Add(claim);
            _stats.WorkingSet(chunk.Pages);
            return (chunk, claim);
        }
        return null;
    }

    /// <summary>A chunk that could not be fetched: its ranges go back to Pending and its process fails; true if the poll loop should look.</summary>
    private bool GiveBack(LazyProcess p, PendingRange chunk, PageRangeSet claim, string why)
    {
        lock (p.Gate)
        {
            p.Claims.Remove(claim);
            if (p.Gone) return false;
            foreach (var r in claim.Ranges) p.Pending.Add(r);
            _failures.FailProcess(p, $"page source failed at {chunk.ImageStart:x}: {why}");
            return true;
        }
    }

    /// <summary>Copies a received chunk into what is left of its claim; true if the poll loop should look.</summary>
    private bool FinishChunk(LazyProcess p, PendingRange chunk, PageRangeSet claim, byte* buf)
    {
        bool wake = false;
        lock (p.Gate)
        {
            p.Claims.Remove(claim);
            if (p.Gone) return false;
            var pieces = claim.Ranges.ToArray();
            for (int i = 0; i < pieces.Length; i++)
            {
                var s = _copier.CopyRange(p, pieces[i], buf, chunk.ImageStart, 0);
                if (s == FillStatus.Again)
                {
                    // events are pending: the poll loop reads them; give the rest back
                    for (int j = i + 1; j < pieces.Length; j++) p.Pending.Add(pieces[j]);
                    wake = true;
                    break;
                }
                if (s != FillStatus.Ok) break;
            }
            if (p.Parked.Count > 0 || p.FaultQueue.Count > 0 || p.Complete) wake = true;
        }
        return wake;
    }

    private void PrefetchOne(LazyProcess p, IPageChannel channel, byte* buf, int chunkPages, bool wsOnly)
    {
        if (ClaimChunk(p, chunkPages, wsOnly) is not { } c) return;
        Exception? failure = null;
        try { channel.Read(p.SourcePid, c.Chunk.ImageStart, new Span<byte>(buf, (int)c.Chunk.Length)); }
        catch (Exception e) { failure = e; }
        bool wake = failure != null ? GiveBack(p, c.Chunk, c.Claim, failure.Message) : FinishChunk(p, c.Chunk, c.Claim, buf);
        if (wake) _wake.Signal();
    }
}
