using System.Diagnostics;
using System.Runtime.InteropServices;
using Crisp.Images;
using Crisp.Native;

namespace Crisp.LazyPages;

/// <summary>
/// Answers page faults: the pages around a fault from the page source with UFFDIO_COPY (a bigger
/// window when faults run sequentially), zeros with UFFDIO_ZEROPAGE where the image has no data.
/// Runs on the poll thread, under the faulting process's Gate, on its own page-source channel (or
/// the urgent side of a shared one). Ordering rules: LazyPagesDaemon.cs.
/// </summary>
internal sealed unsafe class FaultServer : IDisposable
{
    private const int PageSize = 4096;
    private readonly LazyPagesPolicy _policy;
    private readonly UffdEvents _events;
    private readonly PageCopier _copier;
    private readonly FailurePolicy _failures;
    private readonly ServedProcesses _served;
    private readonly LazyPagesStats _stats;
    private readonly Logger _log;
    private readonly IPageChannel _channel;
    private byte* _buf;

    public FaultServer(LazyPagesPolicy policy, IPageChannel channel, UffdEvents events, PageCopier copier,
        FailurePolicy failures, ServedProcesses served, LazyPagesStats stats, Logger log)
    {
        _policy = policy;
        _channel = channel;
        _events = events;
        _copier = copier;
        _failures = failures;
        _served = served;
        _stats = stats;
        _log = log;
        nuint size = (nuint)(Math.Max(policy.SequentialMaxPages, policy.FaultAroundPages) * PageSize);
        _buf = (byte*)NativeMemory.AlignedAlloc(size, PageSize);
    }

    /// <summary>Reads and handles every message on the uffd. Caller holds Gate.</summary>
    public void Drain(LazyProcess p)
    {
        while (!p.Gone && _events.ReadOne(p)) ServeQueued(p);
        ServeQueued(p);
    }

    /// <summary>The faults read meanwhile and the ones parked on a claim that has completed. Caller holds Gate.</summary>
    public void AnswerWaiting(LazyProcess p)
    {
        ReprocessParked(p);
        ServeQueued(p);
    }

    /// <summary>Queued faults first, then parked ones (the poll loop's retry every turn). Caller holds Gate.</summary>
    public void Retry(LazyProcess p)
    {
        ServeQueued(p);
        ReprocessParked(p);
    }

    private void ServeQueued(LazyProcess p)
    {
        while (!p.Gone && p.FaultQueue.Count > 0)
        {
            var (addr, ticks) = p.FaultQueue.Dequeue();
            ServeFault(p, addr, ticks);
        }
    }

    private void ReprocessParked(LazyProcess p)
    {
        if (p.Parked.Count == 0) return;
        var parked = p.Parked.ToArray();
        p.Parked.Clear();
        foreach (var (a, t) in parked)
        {
            if (p.Gone) break;
            if (p.IsClaimed(a)) p.Parked.Add((a, t));
            else ServeFault(p, a, t);
        }
    }

    private void ServeFault(LazyProcess p, ulong addr, long ticks)
    {
        int spins = 0;
        ulong zeroCap = ulong.MaxValue;
        while (!p.Gone)
        {
            if (p.Pending.TryFind(addr, out var range))
            {
                var window = ChooseWindow(p, addr, range);
                p.Pending.Remove(window.Start, window.End);
                try
                {
                    _channel.Read(p.SourcePid, window.ImageStart, new Span<byte>(_buf, (int)window.Length));
                }
                catch (Exception e)
                {
                    p.Pending.Add(window);
                    _failures.FailProcess(p, $"page source failed at {window.ImageStart:x}: {e.Message}");
                    return;
                }
                var outcome = _copier.CopyRange(p, window, _buf, window.ImageStart, addr);
                if (outcome == FillStatus.Again) { _events.AfterEagain(p, ref spins); continue; }
                if (outcome == FillStatus.Ok)
                {
                    _stats.FaultLatency(Stopwatch.GetTimestamp() - ticks);
                    p.FaultOrder?.Add((window.ImageStart, window.ImageStart + window.Length));
                }
                p.PrefetchHint = window.End;
                return;
            }
            if (p.IsClaimed(addr))
            {
                p.Parked.Add((addr, ticks));
                if (p.FaultOrder != null) RecordTouchedClaim(p, addr);
                return;
            }
            // zeros: up to ZeroAroundPages forward, stopping before anything pending or claimed
            // (a present page stops the kernel with EEXIST; a VMA end gives ENOENT: then one page)
            ulong zlen = ZeroWindow(p, addr, zeroCap);
            var z = Uffd.ZeroPage(p.Uffd, addr, zlen);
            switch (z.Status)
            {
                case FillStatus.Ok:
                case FillStatus.Partial:
                    _stats.Zeroed(z.Bytes / PageSize);
                    _stats.FaultLatency(Stopwatch.GetTimestamp() - ticks);
                    return;
                case FillStatus.Again: _events.AfterEagain(p, ref spins); continue;
                case FillStatus.Gone: _served.Drop(p, "exited (ESRCH)"); return;
                case FillStatus.NoVma when zlen > PageSize: zeroCap = PageSize; continue;
                case FillStatus.Failed:
                    _log.W($"lazy-pages: {p.Name}: UFFDIO_ZEROPAGE at {addr:x}: {Errno.Name(z.Errno)}");
                    Uffd.Wake(p.Uffd, addr, PageSize);
                    return;
                default: // Exists: filled meanwhile; NoVma: unmapped under the fault. Either way wake the waiter.
                    Uffd.Wake(p.Uffd, addr, PageSize);
                    return;
            }
        }
    }

    /// <summary>
    /// A fault on a page the prefetch has claimed: the page was touched, so its fault-around block
    /// (image addresses) joins the recorded order although the prefetch delivers it (Prefetch/WorkingSet.cs).
    /// </summary>
    private void RecordTouchedClaim(LazyProcess p, ulong addr)
    {
        foreach (var c in p.Claims)
            if (c.TryFind(addr, out var r))
            {
                ulong block = (ulong)Math.Max(1, _policy.FaultAroundPages) * PageSize;
                ulong start = r.ImageAddressOf(addr) / block * block;
                p.FaultOrder!.Add((start, start + block));
                return;
            }
    }

    private ulong ZeroWindow(LazyProcess p, ulong addr, ulong cap)
    {
        ulong end = addr + Math.Min(cap, (ulong)Math.Max(1, _policy.ZeroAroundPages) * PageSize);
        end = Math.Min(end, p.Pending.NextStartAtOrAfter(addr));
        foreach (var c in p.Claims) end = Math.Min(end, c.NextStartAtOrAfter(addr));
        return Math.Max(end - addr, PageSize);
    }

    /// <summary>
    /// The window a fault brings in: the aligned FaultAroundPages block around it, or, when the
    /// fault lands right where the last window ended (sequential access), twice the last window up
    /// to SequentialMaxPages, starting at the fault. Always inside the pending range it hits.
    /// </summary>
    private PendingRange ChooseWindow(LazyProcess p, ulong addr, PendingRange range)
    {
        long pages;
        ulong start;
        if (addr == p.LastWindowEnd && p.LastWindowPages > 0)
        {
            pages = Math.Min(p.LastWindowPages * 2, _policy.SequentialMaxPages);
            start = addr;
        }
        else
        {
            pages = Math.Max(1, _policy.FaultAroundPages);
            ulong block = (ulong)pages * PageSize;
            start = addr / block * block;
        }
        ulong end = start + (ulong)pages * PageSize;
        var w = range.Clip(start, end)!.Value;
        p.LastWindowEnd = w.End;
        p.LastWindowPages = pages;
        return w;
    }

    public void Dispose()
    {
        _channel.Dispose();
        if (_buf != null) NativeMemory.AlignedFree(_buf);
        _buf = null;
    }
}
