using System.CommandLine;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text.Json.Serialization;
using Crisp.Checkpoint.Dump;
using Crisp.Native;

namespace Crisp.Cli.Remote;

/// <summary>Statistics of one migration (<c>crisp migrate --json</c>).</summary>
public sealed class MigrationStats
{
    public int SourcePid { get; set; }
    public int DestinationPid { get; set; }
    public string Destination { get; set; } = "";
    /// <summary>Frozen on the source → running on the destination.</summary>
    public double DowntimeMs { get; set; }
    /// <summary>Start of the command → every lazy page delivered (or the transfer ended).</summary>
    public double TotalMs { get; set; }
    public double DumpMs { get; set; }
    public double RestoreMs { get; set; }
    public long ImageBytes { get; set; }
    public long PageBytes { get; set; }
    public long BytesMoved { get; set; }
    public ulong LazyPages { get; set; }
    public ulong PagesDelivered { get; set; }
    public string Outcome { get; set; } = "";
    /// <summary>The destination lazy-pages daemon's own statistics (faults, pages by fault / fault-around / prefetch, latency).</summary>
    public System.Text.Json.Nodes.JsonNode? DestinationDaemon { get; set; }
    public bool Succeeded { get; set; }
}

[JsonSourceGenerationOptions(WriteIndented = true, PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower)]
[JsonSerializable(typeof(MigrationStats))]
internal sealed partial class MigrationJsonContext : JsonSerializerContext;

/// <summary>
/// <c>crisp migrate PID --to HOST:PORT</c>: post-copy live migration to a <c>crisp agent</c>.
/// Freeze and dump everything but the lazy memory into a temporary directory, serve that memory
/// from the frozen tree on a lazy page server, send the images and a "start" over one control
/// connection; the agent restores lazily and says "running"; pages then move on demand and in
/// the background; the source is killed once all are delivered. Failure before any page moved
/// resumes the source as it was.
/// </summary>
public static class MigrateCommand
{
    public static Command Create()
    {
        var pidArg = new Argument<int>("pid") { Description = "root of the process tree to move" };
        var to = new Option<string>("--to") { Description = "HOST:PORT of the crisp agent", Required = true };
        var json = new Option<bool>("--json") { Description = "print the statistics as JSON at the end" };
        var timeout = new Option<double>("--timeout") { Description = "seconds to wait for the agent at each step", DefaultValueFactory = _ => 30 };
        var verbosity = new Option<int>("--verbosity", "-v") { Description = "log level 0-4", DefaultValueFactory = _ => 2, Arity = ArgumentArity.ZeroOrOne };
        var cmd = new Command("migrate", "Move a live process to another machine running `crisp agent`");
        cmd.Arguments.Add(pidArg);
        foreach (var o in new Option[] { to, json, timeout, verbosity }) cmd.Options.Add(o);
        cmd.SetAction(r => CrispCommand.Guard("migrate", () =>
        {
            Log.Level = r.GetValue(verbosity);
            return Run(r.GetValue(pidArg), r.GetValue(to)!, r.GetValue(json), TimeSpan.FromSeconds(r.GetValue(timeout)));
        }));
        return cmd;
    }

    private static int Run(int pid, string to, bool json, TimeSpan timeout)
    {
        var total = Stopwatch.StartNew();
        // Protobuf reflection set-up for the image writer, while we connect: not in the downtime.
        var warm = Task.Run(Crisp.Images.ImageWriter.WarmUp);
        var agent = AgentCommand.ParseEndPoint(to, AgentCommand.DefaultPort);
        var stats = new MigrationStats { SourcePid = pid, Destination = agent.ToString() };
        Socket control = new(agent.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        try
        {
            using var cts = new CancellationTokenSource(timeout);
            control.ConnectAsync(agent, cts.Token).AsTask().GetAwaiter().GetResult();
        }
        catch (Exception e) when (e is SocketException or OperationCanceledException)
        {
            control.Dispose();
            throw new CrispException($"cannot reach the agent at {agent}: {(e is SocketException se ? se.SocketErrorCode.ToString() : "timed out")}");
        }
        using var wire = new MigrationWire(control);
        var local = ((IPEndPoint)control.LocalEndPoint!).Address;
        string dir = Path.Combine(Path.GetTempPath(), $"crisp-migrate-{pid}-{Guid.NewGuid():N}"[..40]);

        var running = new TaskCompletionSource<(int Pid, TimeSpan Restore)>(TaskCreationOptions.RunContinuationsAsynchronously);
        var complete = new TaskCompletionSource<(int Rc, string Stats)>(TaskCreationOptions.RunContinuationsAsynchronously);
        long freezeTicks = 0, runningTicks = 0;
        LazyDumpServer? server = null;
        var progress = new ProgressLine();

        void ReadReplies()
        {
            try
            {
                while (true)
                {
                    int type = wire.ReadType();
                    switch (type)
                    {
                        case MigrationWire.Running:
                            int p = wire.ReadI32();
                            long us = wire.ReadI64();
                            runningTicks = Stopwatch.GetTimestamp();
                            running.TrySetResult((p, TimeSpan.FromMicroseconds(us)));
                            break;
                        case MigrationWire.Error:
                            string msg = wire.ReadString();
                            running.TrySetException(new CrispException($"the agent failed: {msg}"));
                            server?.Abort($"the agent failed: {msg}");
                            break;
                        case MigrationWire.Complete:
                            int rc = wire.ReadI32();
                            complete.TrySetResult((rc, wire.ReadString()));
                            break;
                        default:
                            throw new IOException(type < 0 ? "the agent closed the connection" : $"unexpected message {type}");
                    }
                }
            }
            catch (Exception e)
            {
                running.TrySetException(new CrispException($"agent connection: {e.Message}"));
                complete.TrySetException(e);
                server?.Abort($"lost the agent: {e.Message}");
            }
        }

        server = new LazyDumpServer(new LazyDumpServerOptions
        {
            EndPoint = new IPEndPoint(local, 0),
            ConnectTimeout = timeout,
            Listening = ep =>
            {
                // Images are complete (inventory last): ship them, then start the destination.
                var sent = Stopwatch.StartNew();
                foreach (var f in Directory.GetFiles(dir).Order(StringComparer.Ordinal))
                    wire.SendFile(Path.GetFileName(f), f);
                stats.ImageBytes = wire.BytesSent;
                wire.SendStart(ep.Port, "");
                Log.I($"migrate: {stats.ImageBytes} bytes of images sent in {sent.Elapsed.TotalMilliseconds:F1} ms; pages served on {ep}");
                new Thread(ReadReplies) { IsBackground = true, Name = "migrate control" }.Start();
            },
            Progress = (done, all, bytes) => progress.Show(done, all, bytes, total.Elapsed),
        });

        int exit;
        try
        {
            warm.GetAwaiter().GetResult();
            freezeTicks = Stopwatch.GetTimestamp();
            var dumpTimer = Stopwatch.StartNew();
            var result = Dumper.Dump(new DumpOptions
            {
                Pid = pid, ImagesDir = dir, LazyPages = true,
                // The downtime starts when the tree is frozen, not before (the dump reads smaps first).
                Frozen = () => { freezeTicks = Stopwatch.GetTimestamp(); dumpTimer.Restart(); },
                ServeLazy = tree =>
                {
                    stats.DumpMs = dumpTimer.Elapsed.TotalMilliseconds;
                    var end = server.Serve(tree);
                    // Every page is at the destination (or the transfer ended): what "total" measures.
                    stats.TotalMs = total.Elapsed.TotalMilliseconds;
                    return end;
                },
            });
            progress.Done();
            stats.LazyPages = server.LazyPages;
            stats.PagesDelivered = server.PagesDelivered;
            stats.Outcome = server.Outcome;
            if (result.LazyEnd == LazyDumpEnd.Resume)
            {
                Log.E($"migrate: {server.Outcome}; process {pid} was resumed on this machine");
                exit = CrispCommand.ExitFailed;
            }
            else
            {
                // Killed here; the destination has (or had) it.
                if (running.Task.Wait(timeout) && running.Task.IsCompletedSuccessfully)
                {
                    stats.DestinationPid = running.Task.Result.Pid;
                    stats.RestoreMs = running.Task.Result.Restore.TotalMilliseconds;
                    stats.DowntimeMs = Stopwatch.GetElapsedTime(freezeTicks, runningTicks).TotalMilliseconds;
                }
                if (stats.TotalMs == 0) stats.TotalMs = total.Elapsed.TotalMilliseconds;
                server.WaitAndStopAsync(TimeSpan.FromSeconds(10)).GetAwaiter().GetResult();
                if (complete.Task.Wait(TimeSpan.FromSeconds(15)) && complete.Task.IsCompletedSuccessfully)
                {
                    try { stats.DestinationDaemon = System.Text.Json.Nodes.JsonNode.Parse(complete.Task.Result.Stats); }
                    catch (System.Text.Json.JsonException) { Log.W("migrate: the agent's daemon statistics were not JSON"); }
                }
                if (complete.Task.IsCompletedSuccessfully && complete.Task.Result.Rc != 0)
                {
                    stats.Outcome += $"; the destination's lazy-pages daemon reported failure ({complete.Task.Result.Rc})";
                    server.MarkFailed();
                }
                stats.Succeeded = server.Succeeded && stats.DestinationPid != 0;
                stats.PageBytes = server.BytesSent;
                stats.BytesMoved = wire.BytesSent + server.BytesSent;
                exit = stats.Succeeded ? CrispCommand.ExitOk : CrispCommand.ExitFailed;
                if (!stats.Succeeded) Log.E($"migrate: {stats.Outcome}");
            }
        }
        finally
        {
            server.DisposeAsync().AsTask().GetAwaiter().GetResult();
            try { Directory.Delete(dir, recursive: true); } catch (IOException) { }
        }
        if (stats.Succeeded)
            Console.Out.WriteLine($"migrated {pid} to {agent} as pid {stats.DestinationPid}: downtime {stats.DowntimeMs:F1} ms, " +
                                  $"total {stats.TotalMs:F1} ms, {stats.BytesMoved} bytes moved ({stats.PagesDelivered} lazy pages)");
        if (json)
            Console.Out.WriteLine(System.Text.Json.JsonSerializer.Serialize(stats, MigrationJsonContext.Default.MigrationStats));
        return exit;
    }

    /// <summary>Pages left and rate on stderr: one rewritten line on a terminal, a line a second otherwise.</summary>
    private sealed class ProgressLine
    {
        private readonly bool _tty = !Console.IsErrorRedirected;
        private readonly Stopwatch _sinceLine = Stopwatch.StartNew();
        private long _lastBytes;
        private TimeSpan _lastAt;
        private bool _shown;

        public void Show(ulong done, ulong all, long bytes, TimeSpan at)
        {
            if (!_tty && _sinceLine.ElapsedMilliseconds < 1000) return;
            double secs = (at - _lastAt).TotalSeconds;
            double rate = secs > 0 ? (bytes - _lastBytes) / secs / (1 << 20) : 0;
            _lastBytes = bytes;
            _lastAt = at;
            _sinceLine.Restart();
            string line = $"migrate: {all - done} of {all} pages left, {rate:F0} MiB/s";
            if (_tty) { Console.Error.Write("\r" + line + "   "); _shown = true; }
            else Console.Error.WriteLine(line);
        }

        public void Done()
        {
            if (_shown) Console.Error.WriteLine();
        }
    }
}
