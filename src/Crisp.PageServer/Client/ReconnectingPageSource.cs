using Crisp.Native;
using System.Diagnostics;
using Crisp.Images;
using Crisp.PageServer.Protocol;

namespace Crisp.PageServer.Client;

/*
 * Post-copy across a connection that breaks.
 *
 * A lazy restore's memory lives on the source until it is fetched. When the TCP connection to the
 * page server breaks (a reset, a timeout on a silent path, the server's side closed by a proxy or
 * a NAT), the source still holds every page (a lazy dump keeps its tree frozen; a page server its
 * images) and the destination still knows what it asked for. So a broken connection is not the
 * end: this wrapper opens a new one through the inner source's OpenChannel (the one "connect"
 * function: plain TCP, TLS, a crisp hello, whatever the inner source does) with backoff, and asks
 * again for everything that was in flight, in the order it was asked for.
 *
 * Why no page is ever wrong: a request's bytes reach the caller only when its whole answer came in
 * on one connection; an answer cut halfway is thrown away and asked for again in full, into the
 * same buffer, before Read or Receive returns. The daemon copies into the process only after that.
 *
 * What ends the attempts (the caller then poisons what it could not deliver):
 *  - the reconnect timeout passes without a working connection (the source is really gone);
 *  - the server answers, but refuses (a protocol error, crisp's explicit refusal, CRIU's
 *    "0 pages" answer): asking again would be refused again;
 *  - the server drops the connection at the same request on MaxDropsPerRequest fresh connections
 *    in a row: that is how a page server without crisp's refusal (CRIU's) says it cannot serve it;
 *  - the cancellation token fires, or the source is disposed.
 * A zero timeout turns reconnection off (the first broken connection fails the request).
 */

/// <summary>A page source whose channels survive broken connections (see the comment above).</summary>
public sealed class ReconnectingPageSource : IPageSource
{
    /// <summary>Fresh connections that may break at one request before it is given up.</summary>
    public const int MaxDropsPerRequest = 3;

    private readonly IPageSource _inner;
    private readonly string _name;
    private readonly TimeSpan _timeout;
    private readonly Logger _log;
    private readonly CancellationToken _cancel;
    private readonly CancellationTokenSource _disposed = new();
    private int _reconnects;
    /// <summary>An outage ran into the timeout: later ones try once, not for another full timeout.</summary>
    private volatile bool _givenUp;

    /// <param name="inner">opens one connection per OpenChannel (e.g. <see cref="RemotePageSource"/>)</param>
    /// <param name="name">how the server is named in messages ("page server 10.0.0.1:27")</param>
    /// <param name="timeout">how long one outage may last before the request fails; zero: never reconnect</param>
    public ReconnectingPageSource(IPageSource inner, string name, TimeSpan timeout, Logger? log = null, CancellationToken cancel = default)
    {
        _inner = inner;
        _name = name;
        _timeout = timeout;
        _log = log ?? Logger.Silent;
        _cancel = cancel;
    }

    /// <summary>Connections re-established after one broke.</summary>
    public int Reconnects => Volatile.Read(ref _reconnects);

    public TimeSpan Timeout => _timeout;

    /// <summary>Opens the first connection now; a failure here is not retried (the caller has its own peer timeout).</summary>
    public IPageChannel OpenChannel()
    {
        var first = _inner.OpenChannel();
        return first is IPipelinedPageChannel ? new PipelinedChannel(this, first) : new Channel(this, first);
    }

    public void Dispose()
    {
        _disposed.Cancel();
        _inner.Dispose();
    }

    /// <summary>A failure another connection may not have: the connection broke, timed out or never opened.</summary>
    private static bool ConnectionLost(PageSourceException e) =>
        e.InnerException is not (PageServerProtocolException or PageServerRefusedException);

    private class Channel(ReconnectingPageSource owner, IPageChannel first) : IPageChannel
    {
        protected readonly ReconnectingPageSource Owner = owner;
        protected IPageChannel? Inner = first;

        public void Read(int pid, ulong vaddr, Span<byte> destination)
        {
            Outage outage = default;
            while (true)
            {
                var ch = Inner ?? Reopen(ref outage, again: null);
                try
                {
                    ch.Read(pid, vaddr, destination);
                    outage.Report(Owner);
                    return;
                }
                catch (PageSourceException e) when (ConnectionLost(e))
                {
                    Drop();
                    outage.Broke(Owner, e, $"GET pid {pid} 0x{vaddr:x} ({destination.Length / PageServerIov.PageSize} pages)");
                }
            }
        }

        /// <summary>
        /// A new connection, with backoff until the outage's deadline; <paramref name="again"/> asks
        /// it for what was in flight (a failure there is one more broken connection).
        /// </summary>
        protected IPageChannel Reopen(ref Outage outage, Action<IPageChannel>? again)
        {
            while (true)
            {
                outage.Wait(Owner);
                IPageChannel ch;
                try
                {
                    ch = Owner._inner.OpenChannel();
                }
                catch (PageSourceException e) when (ConnectionLost(e))
                {
                    outage.ConnectFailed(e);
                    continue;
                }
                Inner = ch;
                outage.Connected();
                if (again is null) return ch;
                try
                {
                    again(ch);
                    return ch;
                }
                catch (PageSourceException e) when (ConnectionLost(e))
                {
                    Drop();
                    outage.Broke(Owner, e, "asking again for what was in flight");
                }
            }
        }

        protected void Drop()
        {
            var ch = Inner;
            Inner = null;
            ch?.Dispose();
        }

        public void Dispose() => Drop();
    }

    /// <summary>Pipelined: the requests whose answers are still due are asked for again, in order, on the new connection.</summary>
    private sealed class PipelinedChannel(ReconnectingPageSource owner, IPageChannel first) : Channel(owner, first), IPipelinedPageChannel
    {
        private readonly List<(int Pid, ulong Vaddr, int NrPages)> _due = new();

        public void Request(int pid, ulong vaddr, int nrPages)
        {
            try { RequestOrReconnect(pid, vaddr, nrPages); }
            catch { Forget(); throw; }
        }

        public void Receive(int pid, ulong vaddr, Span<byte> destination)
        {
            try { ReceiveOrReconnect(pid, vaddr, destination); }
            catch { Forget(); throw; }
        }

        /// <summary>After a failure the caller gives up on every answer still due: the next request starts afresh.</summary>
        private void Forget()
        {
            _due.Clear();
            Drop();
        }

        private void RequestOrReconnect(int pid, ulong vaddr, int nrPages)
        {
            _due.Add((pid, vaddr, nrPages));
            Outage outage = default;
            if (Inner is IPipelinedPageChannel ch)
            {
                try
                {
                    ch.Request(pid, vaddr, nrPages);
                    return;
                }
                catch (PageSourceException e) when (ConnectionLost(e))
                {
                    Drop();
                    outage.Broke(Owner, e, $"GET pid {pid} 0x{vaddr:x} ({nrPages} pages)");
                }
            }
            Reopen(ref outage, AskAgain); // includes this one
            outage.Report(Owner);
        }

        private void ReceiveOrReconnect(int pid, ulong vaddr, Span<byte> destination)
        {
            Outage outage = default;
            while (true)
            {
                var ch = (IPipelinedPageChannel)(Inner ?? Reopen(ref outage, AskAgain));
                try
                {
                    ch.Receive(pid, vaddr, destination);
                    _due.RemoveAt(0);
                    outage.Report(Owner);
                    return;
                }
                catch (PageSourceException e) when (ConnectionLost(e))
                {
                    Drop();
                    outage.Broke(Owner, e, $"GET pid {pid} 0x{vaddr:x} ({destination.Length / PageServerIov.PageSize} pages)");
                }
            }
        }

        private void AskAgain(IPageChannel ch)
        {
            var pipe = (IPipelinedPageChannel)ch;
            foreach (var (pid, vaddr, nr) in _due) pipe.Request(pid, vaddr, nr);
        }
    }

    /// <summary>One stretch without a working connection, as seen by one request.</summary>
    private struct Outage
    {
        private long _since;
        private int _drops, _connectAttempts, _delayMs;
        private bool _connectedSinceDrop;
        private string? _last;

        public readonly bool Active => _since != 0;

        /// <summary>The connection broke under <paramref name="what"/>: start (or continue) the outage, or give up.</summary>
        public void Broke(ReconnectingPageSource owner, PageSourceException e, string what)
        {
            _last = e.Message;
            if (_since == 0)
            {
                _since = Stopwatch.GetTimestamp();
                _delayMs = 0;
                if (owner._timeout <= TimeSpan.Zero) throw e; // reconnection is off
                owner._log.W($"{owner._name}: the connection broke ({e.Message}); reconnecting for up to {owner._timeout.TotalSeconds:0.###} s");
            }
            if (_connectedSinceDrop) _drops++;
            _connectedSinceDrop = false;
            if (_drops >= MaxDropsPerRequest)
                throw new PageSourceException(
                    $"{owner._name}: dropped the connection at {what} on {_drops} fresh connections in a row: it cannot serve it ({e.Message})", e);
        }

        public void ConnectFailed(PageSourceException e)
        {
            _last = e.Message;
            _connectAttempts++;
        }

        public void Connected()
        {
            _connectAttempts++;
            _connectedSinceDrop = true;
        }

        private readonly string GoneMessage(ReconnectingPageSource owner) =>
            $"{owner._name}: the connection broke and could not be re-established within {owner._timeout.TotalSeconds:0.###} s " +
            $"({_connectAttempts} attempt(s); last: {_last}): the source is gone";

        /// <summary>Waits before the next connection attempt (none before the first); throws once the deadline passed.</summary>
        public void Wait(ReconnectingPageSource owner)
        {
            if (_since == 0) _since = Stopwatch.GetTimestamp(); // a channel left without a connection by an earlier failure
            if (owner._givenUp && _connectAttempts > 0)
                throw new PageSourceException($"{owner._name}: still unreachable ({_last}); it was given up after {owner._timeout.TotalSeconds:0.###} s already");
            var left = owner._timeout - Stopwatch.GetElapsedTime(_since);
            if (left <= TimeSpan.Zero) { owner._givenUp = true; throw new PageSourceException(GoneMessage(owner)); }
            if (_delayMs > 0)
            {
                int ms = (int)Math.Min(_delayMs, Math.Max(1, left.TotalMilliseconds));
                int hit = WaitHandle.WaitAny([owner._cancel.WaitHandle, owner._disposed.Token.WaitHandle], ms);
                if (hit != WaitHandle.WaitTimeout)
                    throw new PageSourceException($"{owner._name}: stopped while reconnecting (last: {_last})");
                if (Stopwatch.GetElapsedTime(_since) >= owner._timeout) { owner._givenUp = true; throw new PageSourceException(GoneMessage(owner)); }
            }
            _delayMs = _delayMs == 0 ? 50 : Math.Min(_delayMs * 2, 1000);
        }

        /// <summary>After a request succeeded: if it had to reconnect, say so once.</summary>
        public readonly void Report(ReconnectingPageSource owner)
        {
            if (_since == 0) return;
            owner._givenUp = false;
            Interlocked.Increment(ref owner._reconnects);
            owner._log.W($"{owner._name}: reconnected after {Stopwatch.GetElapsedTime(_since).TotalMilliseconds:F0} ms " +
                       $"({_connectAttempts} attempt(s)); what was in flight was asked for again");
        }
    }
}
