using Crisp.Native;
using System.Collections.Concurrent;

namespace Crisp.LazyPages;

/// <summary>
/// The processes the daemon serves, as an array replaced on every change (readers take it without
/// a lock). A dropped process leaves it at once; its descriptors are closed by the poll loop, which
/// first takes them out of its poll set (<see cref="LazyPagesDaemon"/>), or at shutdown.
/// </summary>
internal sealed class ServedProcesses
{
    private volatile LazyProcess[] _all = [];
    private readonly object _lock = new();
    private readonly ConcurrentQueue<LazyProcess> _dropped = new();
    private readonly LazyPagesStats _stats;
    private readonly Logger _log;
    private readonly ManualResetEventSlim _prefetchKick;
    private readonly WakePipe _wake;

    public ServedProcesses(LazyPagesStats stats, Logger log, ManualResetEventSlim prefetchKick, WakePipe wake)
    {
        _stats = stats;
        _log = log;
        _prefetchKick = prefetchKick;
        _wake = wake;
    }

    public LazyProcess[] All => _all;

    public void Publish(LazyProcess p)
    {
        _stats.ProcessAdded();
        lock (_lock) _all = [.. _all, p];
        _prefetchKick.Set();
        _wake.Signal(); // the poll loop registers its uffd and pidfd
    }

    /// <summary>Forget a process (exited, killed). Caller holds its Gate.</summary>
    public void Drop(LazyProcess p, string why)
    {
        if (p.Gone) return;
        p.Gone = true;
        p.GoneReason = why;
        long left = p.Pending.Pages;
        foreach (var c in p.Claims) { left += c.Pages; c.Clear(); }
        p.Pending.Clear();
        p.Parked.Clear();
        p.FaultQueue.Clear();
        if (left > 0 || why != "exited") _log.I($"lazy-pages: {p.Name} {why}" + (left > 0 ? $" with {left} page(s) never delivered" : ""));
        lock (_lock) _all = _all.Where(x => x != p).ToArray();
        _dropped.Enqueue(p);
        _wake.Signal(); // the poll loop closes its uffd (which unregisters its ranges) and pidfd
    }

    /// <summary>A process dropped since the last call, for the poll thread to unregister and close.</summary>
    public bool TryTakeDropped(out LazyProcess p) => _dropped.TryDequeue(out p!);

    /// <summary>True when every process has nothing left to deliver and nobody waiting.</summary>
    public bool AllComplete()
    {
        foreach (var p in _all)
            lock (p.Gate) if (!p.Complete) return false;
        return true;
    }
}
