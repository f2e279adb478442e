using System.Diagnostics;
using System.Net;
using Crisp.Checkpoint.Dump;
using Crisp.Native;
using Crisp.PageServer.Server;

namespace Crisp.Cli.Remote;

public sealed class LazyDumpServerOptions
{
    public required IPEndPoint EndPoint { get; init; }
    /// <summary>CRIU's --status-fd: one zero byte once the page server listens.</summary>
    public int StatusFd { get; init; } = -1;
    /// <summary>How long to wait for the destination's first request (no GET by then: the source is resumed).</summary>
    public TimeSpan ConnectTimeout { get; init; } = TimeSpan.FromSeconds(120);
    /// <summary>After pages were delivered: how long the destination may stay disconnected before the transfer is declared lost.</summary>
    public TimeSpan ReconnectTimeout { get; init; } = TimeSpan.FromSeconds(10);
    /// <summary>Called once the server listens, with the bound endpoint (e.g. to start a migration's restore).</summary>
    public Action<IPEndPoint>? Listening { get; init; }
    /// <summary>Progress: (delivered lazy pages, total lazy pages, bytes sent), a few times a second.</summary>
    public Action<ulong, ulong, long>? Progress { get; init; }
}

/// <summary>
/// The serving half of <c>crisp dump --lazy-pages</c>: a <see cref="TcpPageServer"/> whose source is
/// the frozen tree itself. Used as <see cref="DumpOptions.ServeLazy"/>.
///
/// When it ends (the rule, which decides the source's fate):
///  - every PE_LAZY page was read for the destination: Kill (the destination has all it needs;
///    the source is killed at once, the server keeps answering until the client closes);
///  - no page was read yet and no client has connected within <see cref="LazyDumpServerOptions.ConnectTimeout"/>,
///    or every client went away before its first GET: Resume (the destination cannot have any of the
///    lazy memory; its own lazy-pages daemon poisons or kills it when its source fails);
///  - some pages were read, then every client went away for <see cref="LazyDumpServerOptions.ReconnectTimeout"/>:
///    Kill, reported as a failure (the destination already ran, so two copies must not run). A client
///    that closed cleanly counts as done (its process exited or unmapped the rest).
///  - a tree without lazy pages: Kill once a client came and went (nothing to serve), Resume on timeout.
/// </summary>
public sealed class LazyDumpServer : IAsyncDisposable
{
    private readonly LazyDumpServerOptions _options;
    private TcpPageServer? _server;
    private FrozenProcessPageSource? _source;
    private long _bytesSent, _sessionsEnded, _cleanEnds;
    private int _connections;
    private string? _abort;

    /// <summary>
    /// The destination reported that it cannot restore: if no page was delivered yet, serving ends
    /// at once with Resume; otherwise the usual rule applies (the destination may have run).
    /// </summary>
    public void Abort(string reason) => Interlocked.CompareExchange(ref _abort, reason, null);

    /// <summary>The destination reported failure after the transfer (e.g. its daemon had to poison pages).</summary>
    public void MarkFailed() => Succeeded = false;

    public LazyDumpServer(LazyDumpServerOptions options) => _options = options;

    /// <summary>Human-readable end of the transfer, for the log and exit status.</summary>
    public string Outcome { get; private set; } = "not started";
    public bool Succeeded { get; private set; }
    public ulong PagesDelivered => _source?.Delivered.Count ?? 0;
    public ulong LazyPages => _source?.Delivered.Total ?? 0;
    public long BytesSent => Interlocked.Read(ref _bytesSent);
    /// <summary>From the first page read to the last lazy page read.</summary>
    public TimeSpan TransferTime { get; private set; }
    public IPEndPoint? LocalEndPoint => _server?.LocalEndPoint;

    public LazyDumpEnd Serve(LazyDumpTree tree)
    {
        _source = new FrozenProcessPageSource(tree);
        var firstRead = new ManualResetEventSlim(false);
        var transfer = new Stopwatch();
        _source.FirstRead += () => { transfer.Start(); firstRead.Set(); };
        _server = new TcpPageServer(new PageServerOptions
        {
            EndPoint = _options.EndPoint,
            Source = _source,
            StatusFd = _options.StatusFd,
            Log = Log.Level >= 3 ? new LogWriter() : null,
        });
        _server.SessionEnded += r =>
        {
            Interlocked.Add(ref _bytesSent, r.BytesSent);
            if (r.Outcome == SessionOutcome.Completed) Interlocked.Increment(ref _cleanEnds);
            Interlocked.Increment(ref _sessionsEnded);
        };
        // SIGTERM/SIGINT must not just end the process: the kernel would detach (resume) the tree
        // even after the destination ran. Decide like any other end of the transfer.
        // Registered before anyone can learn the port: a signal right after "listening" counts.
        int interrupted = 0;
        using var term = System.Runtime.InteropServices.PosixSignalRegistration.Create(
            System.Runtime.InteropServices.PosixSignal.SIGTERM, c => { c.Cancel = true; interrupted = 1; });
        using var intr = System.Runtime.InteropServices.PosixSignalRegistration.Create(
            System.Runtime.InteropServices.PosixSignal.SIGINT, c => { c.Cancel = true; interrupted = 1; });
        _server.Start();
        Log.I($"lazy page server listening on {_server.LocalEndPoint}: {tree.TotalLazyPages} lazy pages in {tree.Pids.Count} process(es)");
        _options.Listening?.Invoke(_server.LocalEndPoint);

        var waited = Stopwatch.StartNew();
        var idle = new Stopwatch();
        var lastProgress = Stopwatch.StartNew();
        var delivered = _source.Delivered;
        while (true)
        {
            if (delivered.Total > 0 && delivered.Complete.Wait(20))
            {
                TransferTime = transfer.Elapsed;
                Succeeded = true;
                Outcome = $"all {delivered.Total} lazy pages delivered in {TransferTime.TotalMilliseconds:F0} ms";
                Report(delivered);
                return LazyDumpEnd.Kill;
            }
            if (delivered.Total == 0) Thread.Sleep(20);
            int active = _server.ActiveSessions;
            if (active > 0) _connections = 1;
            if (_options.Progress is not null && lastProgress.ElapsedMilliseconds >= 200)
            {
                Report(delivered);
                lastProgress.Restart();
            }
            bool anyDelivered = firstRead.IsSet;
            bool everConnected = _connections > 0 || Interlocked.Read(ref _sessionsEnded) > 0;
            if (Volatile.Read(ref interrupted) != 0)
            {
                TransferTime = transfer.Elapsed;
                if (!anyDelivered)
                {
                    Outcome = "interrupted before any page was delivered";
                    return LazyDumpEnd.Resume;
                }
                Outcome = $"interrupted after {delivered.Count} of {delivered.Total} lazy pages; the source was killed because the destination had already run";
                return LazyDumpEnd.Kill;
            }
            if (!anyDelivered && Volatile.Read(ref _abort) is { } reason)
            {
                Outcome = reason;
                return LazyDumpEnd.Resume;
            }
            if (active > 0) { idle.Reset(); continue; }
            if (!idle.IsRunning) idle.Start();

            if (delivered.Total == 0 && everConnected)
            {
                Succeeded = true;
                Outcome = "no lazy pages to serve; the destination connected and finished";
                return LazyDumpEnd.Kill;
            }
            if (!anyDelivered)
            {
                if (everConnected && idle.Elapsed > TimeSpan.FromSeconds(1))
                {
                    Outcome = "the destination disconnected before asking for any page";
                    return LazyDumpEnd.Resume;
                }
                if (!everConnected && waited.Elapsed > _options.ConnectTimeout)
                {
                    Outcome = $"no destination connected within {_options.ConnectTimeout.TotalSeconds:0.#} s";
                    return LazyDumpEnd.Resume;
                }
                continue;
            }
            // Pages were delivered: the destination has run. Never resume from here on.
            if (Interlocked.Read(ref _cleanEnds) > 0 && idle.Elapsed > TimeSpan.FromSeconds(2))
            {
                TransferTime = transfer.Elapsed;
                Succeeded = true;
                Outcome = $"the destination finished after {delivered.Count} of {delivered.Total} lazy pages (the rest was unmapped or the process exited)";
                return LazyDumpEnd.Kill;
            }
            if (idle.Elapsed > _options.ReconnectTimeout)
            {
                TransferTime = transfer.Elapsed;
                Outcome = $"the destination went away after {delivered.Count} of {delivered.Total} lazy pages; the source was killed because the destination had already run";
                return LazyDumpEnd.Kill;
            }
        }
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

    private sealed class LogWriter : TextWriter
    {
        public override System.Text.Encoding Encoding => System.Text.Encoding.UTF8;
        public override void WriteLine(string? value) => Log.D(value ?? "");
    }
}
