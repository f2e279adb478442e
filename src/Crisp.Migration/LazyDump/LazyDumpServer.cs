using System.Diagnostics;
using System.Net;
using System.Runtime.InteropServices;
using Crisp.Checkpoint.Dump;
using Crisp.Native;
using Crisp.Native.ProcFs;
using Crisp.PageServer.Protocol;
using Crisp.PageServer.Server;

namespace Crisp.Migration;

/// <summary>
/// The serving half of <c>crisp dump --lazy-pages</c> and of <c>crisp migrate</c>: a
/// <see cref="TcpPageServer"/> whose source is the frozen tree itself. Used as <see cref="DumpOptions.ServeLazy"/>.
///
/// Two copies must never run. Once one page has left the frozen tree the destination may have
/// run, so from then on the source is only ever killed; before that, it is resumed. The choice
/// and the first read are one atomic step (<see cref="FrozenProcessPageSource.TryRefuseReads"/>).
///
/// When it ends (the rule, which decides the source's fate):
///  - every PE_LAZY page was read for the destination, and then every connection closed cleanly
///    (or stayed open, unbroken, for <see cref="LazyDump.InFlightGrace"/>): Kill (the destination
///    has all it needs). Read is not received: if a connection broke after the last pages were
///    read, the tree stays frozen for the destination to reconnect and ask again; if it does not
///    come back within <see cref="LazyDumpServerOptions.ReconnectTimeout"/>: Kill, reported as a
///    failure (it may lack what was in flight);
///  - no page was asked for within <see cref="LazyDumpServerOptions.FirstPageTimeout"/> (whether
///    or not a client connected), or every client went away before its first GET, or the
///    destination reported failure (<see cref="Abort"/>), or SIGTERM/SIGINT came: Resume, and the
///    transfer failed (the destination cannot have any of the lazy memory; its own lazy-pages
///    daemon poisons or kills it when its source fails);
///  - a process of the tree died while frozen (killed from outside): the transfer failed; Resume
///    what is left if nothing was delivered, else Kill;
///  - some pages were read, then every client went away for <see cref="LazyDumpServerOptions.ReconnectTimeout"/>,
///    or SIGTERM/SIGINT came: Kill, reported as a failure (the destination already ran). A client
///    that closed cleanly counts as done (its process exited or unmapped the rest);
///  - until then a destination whose connection broke may come back (ReconnectingPageSource on
///    its side) and is served as before: the tree stays frozen. Only that destination: the session
///    id written into the images (<see cref="CrispHello"/>) and the first client to fetch bind the
///    tree (<see cref="OneDestination"/>); any other client is refused;
///  - a tree without lazy pages: Kill once a client came and went (nothing to serve), Resume on timeout.
/// </summary>
public sealed class LazyDumpServer : IAsyncDisposable
{
    private static readonly TimeSpan TreeCheckInterval = TimeSpan.FromMilliseconds(250);

    private readonly LazyDumpServerOptions _options;
    private TcpPageServer? _server;
    private FrozenProcessPageSource? _source;
    private long _bytesSent, _sessionsEnded, _cleanEnds, _brokenEnds;
    /// <summary>Whether the session that ended last (of those that fetched) ended cleanly.</summary>
    private volatile bool _lastEndBroken;
    private int _connections, _interrupted;
    private string? _abort;

    public LazyDumpServer(LazyDumpServerOptions options) => _options = options;

    /// <summary>
    /// The destination reported that it cannot restore: if no page was delivered yet, serving ends
    /// at once with Resume; otherwise the usual rule applies (the destination may have run).
    /// </summary>
    public void Abort(string reason) => Interlocked.CompareExchange(ref _abort, reason, null);

    /// <summary>What SIGTERM/SIGINT do: end now, resuming the tree if nothing was delivered, else killing it.</summary>
    public void Interrupt() => Volatile.Write(ref _interrupted, 1);

    /// <summary>The destination reported failure after the transfer (e.g. its daemon had to poison pages).</summary>
    public void MarkFailed() => Succeeded = false;

    /// <summary>Human-readable end of the transfer, for the log and exit status.</summary>
    public string Outcome { get; private set; } = "not started";
    public bool Succeeded { get; private set; }
    public ulong PagesDelivered => _source?.Delivered.Count ?? 0;
    public ulong LazyPages => _source?.Delivered.Total ?? 0;
    public long BytesSent => Interlocked.Read(ref _bytesSent);
    /// <summary>From the first page read to the last lazy page read.</summary>
    public TimeSpan TransferTime { get; private set; }
    public IPEndPoint? LocalEndPoint => _server?.LocalEndPoint;

    /// <summary>When the last lazy page was read (Stopwatch ticks), 0 if never.</summary>
    public long CompletedTicks { get; private set; }

    /// <summary>The session id given to this dump's destination (written into the images by <see cref="Serve(LazyDumpTree, string?)"/>).</summary>
    public ulong SessionId { get; } = CrispHello.NewId();

    public LazyDumpEnd Serve(LazyDumpTree tree) => Serve(tree, null);

    /// <summary>
    /// Serves <paramref name="tree"/>; with <paramref name="imagesDir"/>, first writes the session
    /// id there (the destination, finding it with the images, says hello and can reconnect).
    /// </summary>
    public LazyDumpEnd Serve(LazyDumpTree tree, string? imagesDir)
    {
        if (imagesDir is not null) CrispHello.WriteSession(imagesDir, SessionId);
        _source = new FrozenProcessPageSource(tree);
        var transfer = new Stopwatch();
        _source.FirstRead += transfer.Start;
        _server = new TcpPageServer(new PageServerOptions
        {
            EndPoint = _options.EndPoint,
            Source = _source,
            StatusFd = _options.StatusFd,
            Transport = _options.Transport,
            Gate = new OneDestination(SessionId),
        });
        _server.SessionEnded += r =>
        {
            // A refused client got nothing: it is neither the destination nor its end.
            if (r.Outcome == SessionOutcome.Refused)
            {
                Log.W($"lazy page server: {r.Remote} refused before any page was served: {r.Error?.Message}");
                return;
            }
            Interlocked.Add(ref _bytesSent, r.BytesSent);
            if (r.Outcome == SessionOutcome.Completed) Interlocked.Increment(ref _cleanEnds);
            // A connection that fetched and broke: what it had in flight may not have arrived.
            // (One refused, or that never asked for a page, had nothing in flight.)
            bool broken = r.Outcome is not (SessionOutcome.Completed or SessionOutcome.Cancelled);
            if (r.GetRequests > 0)
            {
                if (broken) Interlocked.Increment(ref _brokenEnds);
                _lastEndBroken = broken;
            }
            if (broken && r.GetRequests > 0)
                Log.I($"lazy page server: the connection from {r.Remote} broke ({r.Error?.Message}); waiting for the destination to come back");
            Interlocked.Increment(ref _sessionsEnded);
        };
        // SIGTERM/SIGINT must not just end the process: the kernel would detach (resume) the tree
        // even after the destination ran. Decide like any other end of the transfer.
        // Registered before anyone can learn the port: a signal right after "listening" counts.
        using var term = _options.HandleSignals ? PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => { c.Cancel = true; Interrupt(); }) : null;
        using var intr = _options.HandleSignals ? PosixSignalRegistration.Create(PosixSignal.SIGINT, c => { c.Cancel = true; Interrupt(); }) : null;
        _server.Start();
        Log.I($"lazy page server listening on {_server.LocalEndPoint}: {tree.TotalLazyPages} lazy pages in {tree.Pids.Count} process(es)");
        _options.Listening?.Invoke(_server.LocalEndPoint);
        var end = Decide(tree, _source, transfer);
        TransferTime = transfer.Elapsed;
        return end;
    }

    /// <summary>The serving loop: returns once the rule in the class comment decides the source's fate.</summary>
    private LazyDumpEnd Decide(LazyDumpTree tree, FrozenProcessPageSource source, Stopwatch transfer)
    {
        var waited = Stopwatch.StartNew();
        var idle = new Stopwatch();
        var lastProgress = Stopwatch.StartNew();
        var lastTreeCheck = Stopwatch.StartNew();
        var delivered = source.Delivered;
        Stopwatch? sinceComplete = null;
        long brokenAtComplete = 0;
        while (true)
        {
            if (delivered.Total > 0 && delivered.Complete.Wait(20))
            {
                if (sinceComplete is null)
                {
                    sinceComplete = Stopwatch.StartNew();
                    CompletedTicks = Stopwatch.GetTimestamp();
                    TransferTime = transfer.Elapsed;
                    brokenAtComplete = Interlocked.Read(ref _brokenEnds);
                    Report(delivered);
                }
                if (Completed(sinceComplete, brokenAtComplete, idle) is { } end) return end;
                Thread.Sleep(20); // Complete stays set: Wait no longer paces the loop
            }
            if (delivered.Total == 0) Thread.Sleep(20);
            int active = _server!.ActiveSessions; // authenticated clients only
            if (active > 0) _connections = 1;
            if (_options.Progress is not null && lastProgress.ElapsedMilliseconds >= 200)
            {
                Report(delivered);
                lastProgress.Restart();
            }
            bool everConnected = _connections > 0 || Interlocked.Read(ref _sessionsEnded) > 0;
            if (lastTreeCheck.Elapsed >= TreeCheckInterval)
            {
                lastTreeCheck.Restart();
                if (DeadProcess(tree) is int dead)
                {
                    if (TryResume($"process {dead} of the tree died while frozen; nothing was delivered, the rest of the tree was resumed"))
                        return LazyDumpEnd.Resume;
                    Outcome = $"process {dead} of the tree died while frozen, after {delivered.Count} of {delivered.Total} lazy pages; the rest of the tree was killed";
                    return LazyDumpEnd.Kill;
                }
            }
            if (Volatile.Read(ref _interrupted) != 0)
            {
                if (TryResume("interrupted before any page was delivered")) return LazyDumpEnd.Resume;
                Outcome = $"interrupted after {delivered.Count} of {delivered.Total} lazy pages; the source was killed because the destination had already run";
                return LazyDumpEnd.Kill;
            }
            if (Volatile.Read(ref _abort) is { } reason && TryResume(reason)) return LazyDumpEnd.Resume;
            if (!source.AnyRead && waited.Elapsed > _options.FirstPageTimeout)
            {
                string why = everConnected
                    ? $"the destination connected but asked for no page within {_options.FirstPageTimeout.TotalSeconds:0.#} s"
                    : $"no destination connected within {_options.FirstPageTimeout.TotalSeconds:0.#} s";
                if (TryResume(why)) return LazyDumpEnd.Resume;
            }
            if (active > 0) { idle.Reset(); continue; }
            if (!idle.IsRunning) idle.Start();
            if (sinceComplete is not null) continue; // Completed decides

            if (delivered.Total == 0 && everConnected)
            {
                Succeeded = true;
                Outcome = "no lazy pages to serve; the destination connected and finished";
                return LazyDumpEnd.Kill;
            }
            if (!source.AnyRead)
            {
                if (everConnected && idle.Elapsed > TimeSpan.FromSeconds(1)
                    && TryResume("the destination disconnected before asking for any page"))
                    return LazyDumpEnd.Resume;
                continue;
            }
            // Pages were delivered: the destination has run. Never resume from here on.
            if (Interlocked.Read(ref _cleanEnds) > 0 && idle.Elapsed > TimeSpan.FromSeconds(2))
            {
                Succeeded = true;
                Outcome = $"the destination finished after {delivered.Count} of {delivered.Total} lazy pages (the rest was unmapped or the process exited)";
                return LazyDumpEnd.Kill;
            }
            if (idle.Elapsed > _options.ReconnectTimeout)
            {
                Outcome = $"the destination went away after {delivered.Count} of {delivered.Total} lazy pages; the source was killed because the destination had already run";
                return LazyDumpEnd.Kill;
            }
        }
    }

    /// <summary>
    /// Every lazy page was read: Kill once the destination confirms by closing cleanly (or stays
    /// connected, unbroken, for the in-flight grace); wait while a connection that broke after the
    /// last pages may come back; null to go on waiting.
    /// </summary>
    private LazyDumpEnd? Completed(Stopwatch sinceComplete, long brokenAtComplete, Stopwatch idle)
    {
        int active = _server!.ActiveSessions;
        bool brokeSince = Interlocked.Read(ref _brokenEnds) > brokenAtComplete;
        string all = $"all {LazyPages} lazy pages delivered in {TransferTime.TotalMilliseconds:F0} ms";
        if (active == 0 && !_lastEndBroken)
        {
            Succeeded = true;
            Outcome = all;
            return LazyDumpEnd.Kill;
        }
        if (active > 0 && !brokeSince && sinceComplete.Elapsed >= LazyDump.InFlightGrace)
        {
            Succeeded = true;
            Outcome = $"{all} (the destination kept its connection open)";
            return LazyDumpEnd.Kill;
        }
        if (active > 0) { idle.Reset(); return null; }
        if (!idle.IsRunning) idle.Start();
        if (idle.Elapsed > _options.ReconnectTimeout)
        {
            Outcome = $"all {LazyPages} lazy pages were read, but the connection broke after the last ones and the destination did not come back " +
                      $"within {_options.ReconnectTimeout.TotalSeconds:0.#} s: it may lack what was in flight; the source was killed because the destination had already run";
            return LazyDumpEnd.Kill;
        }
        return null;
    }

    /// <summary>
    /// The one destination of this dump (CrispHello.cs): a hello must carry this dump's session;
    /// the first client to fetch binds the tree and from then on only it (its reconnections, its
    /// other channel) is served. A client without a hello (CRIU's) counts as one client, id 0.
    /// </summary>
    private sealed class OneDestination(ulong session) : IClientGate
    {
        private readonly object _lock = new();
        private bool _bound;
        private ulong _client;

        public int Admit(CrispHello? hello, bool fetching)
        {
            if (hello is { } h && h.Session != session) return CrispHello.OtherSession;
            ulong id = hello?.Client ?? 0;
            lock (_lock)
            {
                if (_bound) return _client == id ? CrispHello.Accepted : CrispHello.OtherClient;
                if (fetching) { _bound = true; _client = id; }
                return CrispHello.Accepted;
            }
        }
    }

    /// <summary>Resume is chosen only if no page has left the tree, and then none ever will.</summary>
    private bool TryResume(string outcome)
    {
        if (!_source!.TryRefuseReads()) return false;
        Outcome = outcome;
        return true;
    }

    /// <summary>A process of the tree that is gone or a zombie (killed while frozen), or null.</summary>
    private static int? DeadProcess(LazyDumpTree tree)
    {
        foreach (int pid in tree.Pids)
        {
            try
            {
                if (Proc.Stat(tree.HostPid(pid)).State is 'Z' or 'X') return pid;
            }
            catch (IOException) { return pid; }
        }
        return null;
    }

    private void Report(DeliveryTracker d) => _options.Progress?.Invoke(d.Count, d.Total, BytesSent);

    /// <summary>After the source is gone: lets the destination finish reading what is in flight, then stops.</summary>
    public async Task WaitAndStopAsync(TimeSpan grace)
    {
        if (_server is null) return;
        var sw = Stopwatch.StartNew();
        while (_server.ActiveSessions > 0 && sw.Elapsed < grace)
            await Task.Delay(10).ConfigureAwait(false);
        await _server.StopAsync().ConfigureAwait(false);
    }

    public async ValueTask DisposeAsync()
    {
        if (_server is not null) await _server.DisposeAsync().ConfigureAwait(false);
        _source?.Dispose();
    }
}
