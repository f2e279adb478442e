using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Crisp.Native;
using Crisp.PageServer.Protocol;

namespace Crisp.PageServer.Server;

/// <summary>
/// A page server speaking CRIU's protocol. Unlike CRIU's, which serves one connection and exits,
/// it accepts any number of connections, concurrently, until stopped: a dump may send while
/// several lazy-pages daemons (restores in a row, or a fault channel next to a prefetch channel)
/// fetch. Each connection is one <see cref="PageServerSession"/>. With a finite
/// <see cref="PageServerOptions.PeerTimeout"/> it stops by itself when no client has come for that long.
/// </summary>
public sealed class TcpPageServer : IAsyncDisposable
{
    private readonly PageServerOptions _options;
    private readonly Logger _log;
    private readonly CancellationTokenSource _stop = new();
    private readonly object _lock = new();
    private readonly HashSet<Task> _sessions = new();
    private readonly HashSet<Socket> _sockets = new();
    private Socket? _listener;
    private Task? _acceptLoop;
    private int _nextSessionId;
    /// <summary>When a session last started or ended (or the server started): the peer timeout counts from here.</summary>
    private long _lastActivity;

    public TcpPageServer(PageServerOptions options)
    {
        if (options.Sink is null && options.Source is null)
            throw new ArgumentException("a page server needs a sink (receive mode), a source (lazy mode) or both");
        if (options.ChunkSize < PageServerIov.PageSize || options.ChunkSize % PageServerIov.PageSize != 0)
            throw new ArgumentException("ChunkSize must be a positive multiple of 4096");
        _options = options;
        _log = options.Log.Prefixed("page-server: ");
    }

    /// <summary>The address actually bound (the real port when 0 was asked for). Valid after <see cref="Start"/>.</summary>
    public IPEndPoint LocalEndPoint =>
        (IPEndPoint)(_listener?.LocalEndPoint ?? throw new InvalidOperationException("page server not started"));

    /// <summary>Called once per finished session (any outcome), from the session's task.</summary>
    public event Action<PageServerSessionResult>? SessionEnded;

    /// <summary>Sessions whose client authenticated and that still run (a client still in its TLS handshake, or refused, is not one).</summary>
    public int ActiveSessions => Volatile.Read(ref _active);

    private int _active;

    private int RunningSessions { get { lock (_lock) return _sessions.Count; } }

    /// <summary>Sessions started so far.</summary>
    public int SessionsStarted => Volatile.Read(ref _nextSessionId);

    /// <summary>The server stopped by itself: no client came within <see cref="PageServerOptions.PeerTimeout"/>.</summary>
    public bool TimedOut { get; private set; }

    /// <summary>Completes when the accept loop and every session have ended.</summary>
    public Task Completion => _acceptLoop ?? Task.CompletedTask;

    /// <summary>Binds, listens, reports readiness on the status fd and starts accepting. Returns at once.</summary>
    public void Start()
    {
        if (_listener is not null) throw new InvalidOperationException("page server already started");
        var ep = _options.EndPoint;
        var listener = new Socket(ep.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            listener.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
            if (ep.AddressFamily == AddressFamily.InterNetworkV6 && ep.Address.Equals(IPAddress.IPv6Any))
                listener.DualMode = true;
            listener.Bind(ep);
            listener.Listen(128);
        }
        catch
        {
            listener.Dispose();
            throw;
        }
        _listener = listener;
        Log($"listening on {LocalEndPoint} ({Mode}, {_options.Transport})");
        StatusFd.Report(_options.StatusFd);
        Volatile.Write(ref _lastActivity, Stopwatch.GetTimestamp());
        _acceptLoop = AcceptLoopAsync();
        if (_options.PeerTimeout > TimeSpan.Zero && _options.PeerTimeout != Timeout.InfiniteTimeSpan)
            _ = WatchIdleAsync(_options.PeerTimeout, _stop.Token);
    }

    /// <summary>Starts (if needed) and runs until <paramref name="cancellationToken"/> fires, then stops cleanly.</summary>
    public async Task RunAsync(CancellationToken cancellationToken)
    {
        if (_listener is null) Start();
        using (cancellationToken.Register(() => _stop.Cancel()))
            await Completion.ConfigureAwait(false);
    }

    /// <summary>
    /// Begins stopping without waiting (safe from a <see cref="SessionEnded"/> handler, e.g. to end
    /// after the first session as CRIU's page server does); <see cref="Completion"/> tells when done.
    /// </summary>
    public void RequestStop()
    {
        try { _stop.Cancel(); } catch (ObjectDisposedException) { return; } // already disposed: stopped
        _listener?.Dispose();
    }

    /// <summary>Stops accepting, cancels every session and waits for them to end. Do not await it inside a SessionEnded handler.</summary>
    public async Task StopAsync()
    {
        RequestStop();
        await Completion.ConfigureAwait(false);
    }

    public async ValueTask DisposeAsync()
    {
        await StopAsync().ConfigureAwait(false);
        _stop.Dispose();
    }

    private string Mode => (_options.Sink, _options.Source) switch
    {
        (not null, not null) => "receive and lazy",
        (not null, null) => "receive",
        _ => "lazy",
    };

    private async Task AcceptLoopAsync()
    {
        var token = _stop.Token;
        try
        {
            while (!token.IsCancellationRequested)
            {
                Socket client;
                try
                {
                    client = await _listener!.AcceptAsync(token).ConfigureAwait(false);
                }
                catch (OperationCanceledException) { break; }
                catch (ObjectDisposedException) { break; }
                catch (SocketException e) when (e.SocketErrorCode is SocketError.ConnectionAborted or SocketError.ConnectionReset)
                {
                    continue; // the client gave up before we accepted: not our problem
                }
                StartSession(client, token);
            }
        }
        finally
        {
            _listener?.Dispose();
            Task[] running;
            Socket[] open;
            lock (_lock)
            {
                running = _sessions.ToArray();
                open = _sockets.ToArray();
            }
            // Cancellation ends every socket wait; closing the sockets as well makes clients see the
            // end at once even when a session is stuck inside a synchronous page-source read.
            foreach (var s in open) s.Dispose();
            var all = Task.WhenAll(running);
            if (await Task.WhenAny(all, Task.Delay(_options.StopGrace)).ConfigureAwait(false) != all)
                Log($"stopped with {RunningSessions} sessions still busy in their page source");
            else
                Log("stopped");
        }
    }

    /// <summary>Stops the server once no session has run for <paramref name="timeout"/>.</summary>
    private async Task WatchIdleAsync(TimeSpan timeout, CancellationToken token)
    {
        var tick = TimeSpan.FromMilliseconds(Math.Clamp(timeout.TotalMilliseconds / 4, 10, 200));
        try
        {
            while (!token.IsCancellationRequested)
            {
                await Task.Delay(tick, token).ConfigureAwait(false);
                if (RunningSessions > 0 || Stopwatch.GetElapsedTime(Volatile.Read(ref _lastActivity)) < timeout) continue;
                TimedOut = true;
                Log(SessionsStarted == 0
                    ? $"no client came within {timeout.TotalSeconds:0.###} s; stopping"
                    : $"no new client for {timeout.TotalSeconds:0.###} s since the last session; stopping");
                RequestStop();
                return;
            }
        }
        catch (OperationCanceledException) { }
        catch (ObjectDisposedException) { }
    }

    private void StartSession(Socket client, CancellationToken token)
    {
        int id = Interlocked.Increment(ref _nextSessionId);
        Volatile.Write(ref _lastActivity, Stopwatch.GetTimestamp());
        DeadPeerDetection.Apply(client);
        bool authenticated = false;
        var session = new PageServerSession(id, client, _options, () => { authenticated = true; Interlocked.Increment(ref _active); });
        var tcs = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        lock (_lock)
        {
            _sessions.Add(tcs.Task);
            _sockets.Add(client);
        }
        _ = Task.Run(async () =>
        {
            PageServerSessionResult result;
            try
            {
                result = await session.RunAsync(token).ConfigureAwait(false);
            }
            finally
            {
                if (authenticated) Interlocked.Decrement(ref _active);
                lock (_lock) _sockets.Remove(client);
                client.Dispose();
            }
            Log(Describe(result));
            try
            {
                SessionEnded?.Invoke(result);
            }
            catch (Exception e)
            {
                Warn($"SessionEnded handler threw: {e}");
            }
            finally
            {
                Volatile.Write(ref _lastActivity, Stopwatch.GetTimestamp());
                lock (_lock) _sessions.Remove(tcs.Task);
                tcs.SetResult();
            }
        }, CancellationToken.None);
    }

    private static string Describe(PageServerSessionResult r)
    {
        string what = $"session {r.SessionId} from {r.Remote}: {r.Outcome}, {r.BytesReceived} bytes received, " +
                      $"{r.BytesSent} bytes sent, {r.GetRequests} GETs";
        return r.Outcome switch
        {
            SessionOutcome.Completed or SessionOutcome.Cancelled => what,
            SessionOutcome.Fault => $"{what}: BUG: {r.Error}",
            SessionOutcome.Refused => $"session {r.SessionId} from {r.Remote}: refused before any page was read or served: {r.Error?.Message}",
            _ => $"{what}: {r.Error?.Message}",
        };
    }

    private void Log(string line) => _log.I(line);

    private void Warn(string line) => _log.W(line);
}
