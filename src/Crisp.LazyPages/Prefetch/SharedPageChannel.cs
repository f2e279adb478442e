using Crisp.Images;

namespace Crisp.LazyPages;

/*
 * One page-source channel that faults and prefetch can share.
 *
 * The daemon normally gives prefetch a channel of its own, so a fault never queues behind a bulk
 * transfer. CRIU's lazy page server (`criu dump --lazy-pages`) accepts exactly one connection: it
 * closes its listening socket after the first accept, and a second connect is refused. Then
 * prefetch reads through the fault channel, and two rules keep faults quick:
 *  - prefetch asks for small pieces (LazyPagesPolicy.SharedChannelPrefetchPages), so a fault waits
 *    at most one small transfer;
 *  - a fault announces itself before it waits for the channel, and prefetch does not take the
 *    channel while one is waiting.
 * Faults always go through here (an uncontended lock costs nanoseconds next to a fault's
 * microseconds), so the switch needs nothing from the fault server.
 */

/// <summary>The fault channel, with a second, lower-priority way in for prefetch.</summary>
internal sealed class SharedPageChannel : IDisposable
{
    private readonly object _lock = new();
    private readonly IPageChannel _inner;
    private int _urgentWaiting;

    public SharedPageChannel(IPageChannel inner)
    {
        _inner = inner;
        Urgent = new UrgentView(this);
        Bulk = new BulkView(this);
    }

    /// <summary>The faults' way in; disposing it closes the channel.</summary>
    public IPageChannel Urgent { get; }
    /// <summary>Prefetch's way in: waits while a fault waits; disposing it does nothing.</summary>
    public IPageChannel Bulk { get; }

    private void ReadUrgent(int pid, ulong vaddr, Span<byte> destination)
    {
        Interlocked.Increment(ref _urgentWaiting);
        lock (_lock)
        {
            Interlocked.Decrement(ref _urgentWaiting);
            _inner.Read(pid, vaddr, destination);
        }
    }

    private void ReadBulk(int pid, ulong vaddr, Span<byte> destination)
    {
        var spin = new SpinWait();
        while (Volatile.Read(ref _urgentWaiting) > 0) spin.SpinOnce();
        lock (_lock) _inner.Read(pid, vaddr, destination);
    }

    public void Dispose() => _inner.Dispose();

    private sealed class UrgentView(SharedPageChannel shared) : IPageChannel
    {
        public void Read(int pid, ulong vaddr, Span<byte> destination) => shared.ReadUrgent(pid, vaddr, destination);
        public void Dispose() => shared.Dispose();
    }

    private sealed class BulkView(SharedPageChannel shared) : IPageChannel
    {
        public void Read(int pid, ulong vaddr, Span<byte> destination) => shared.ReadBulk(pid, vaddr, destination);
        public void Dispose() { }
    }
}
