using System.CommandLine;
using System.Runtime.InteropServices;
using Crisp.Images;
using Crisp.LazyPages;
using Crisp.Native;
using Crisp.PageServer;
using Crisp.PageServer.Client;

namespace Crisp.Cli;

/// <summary>
/// `crisp lazy-pages`: the daemon that answers the page faults of lazily restored processes,
/// from the local pages images or (--page-server) from a remote page server, and pushes the
/// rest in the background. CRIU's command-line shape: -D, -W, --status-fd, --page-server,
/// --address, --port. It never waits forever: --peer-timeout bounds the wait for the page server
/// and for the first hand-off, and SIGTERM/SIGINT poison what is left and end it (exit 1).
/// </summary>
public static class LazyPagesCommand
{
    public static Command Create()
    {
        var common = new CommonOptions();
        var statusFd = new Option<int>("--status-fd") { Description = "write one zero byte to this fd once listening, then close it", DefaultValueFactory = _ => -1 };
        var json = new Option<string?>("--json") { Description = "statistics as JSON: to stdout, or to the given file", Arity = ArgumentArity.ZeroOrOne };
        var pageServer = new Option<bool>("--page-server") { Description = "fetch pages from a remote page server instead of local images" };
        var address = new Option<string?>("--address") { Description = "page server address (with --page-server)" };
        var port = new Option<int>("--port") { Description = "page server port (with --page-server)", DefaultValueFactory = _ => 27 };
        var peerTimeout = new Option<double>("--peer-timeout")
        {
            Description = "seconds to wait for the page server to answer and for a restore to hand over its first process, then give up (exit 1); 0: forever",
            DefaultValueFactory = _ => 300,
        };
        var tls = new Remote.TlsOptions();
        var reconnect = new Option<double>("--ps-reconnect-timeout")
        {
            Description = "with --page-server: seconds to keep trying to re-establish a broken connection (asking again for what was in flight) before the pages not yet delivered are poisoned; 0: do not reconnect",
            DefaultValueFactory = _ => RemotePages.DefaultReconnectTimeout.TotalSeconds,
        };
        var order = new Option<string?>("--prefetch-order")
        {
            Description = "working-set prefetch: push first, as each process is handed over, the pages FILE lists in its order (a --record-prefetch-order file) " +
                          $"(default: {WorkingSet.FileName} in the images directory if it is there; none with --page-server)",
        };
        var noOrder = new Option<bool>("--no-prefetch-order") { Description = $"do not push the working set of {WorkingSet.FileName} in the images directory" };
        var record = new Option<string?>("--record-prefetch-order")
        {
            Description = $"write the order in which this run's pages were first faulted to FILE once every page is in (FILE in the images directory named {WorkingSet.FileName}: later lazy restores use it)",
        };
        var window = new Option<double>("--record-window")
        {
            Description = "with --record-prefetch-order: hold the background prefetch this many seconds after the restore finished, so what the processes touch meanwhile comes by fault and is recorded (their working set); 0: prefetch at once, record the faults that still happen",
            DefaultValueFactory = _ => 0,
        };
        var cmd = new Command("lazy-pages", "Serve the page faults of lazily restored processes");
        foreach (var o in new Option[] { statusFd, json, pageServer, address, port, peerTimeout, reconnect, order, noOrder, record, window }) cmd.Options.Add(o);
        tls.AddTo(cmd);
        common.AddTo(cmd);
        cmd.SetAction(r => CrispCommand.Guard("lazy-pages", () =>
        {
            common.ConfigureLog(r);
            string images = common.Images(r);
            double seconds = r.GetValue(peerTimeout);
            if (seconds < 0 || double.IsNaN(seconds)) throw new CrispException($"--peer-timeout {seconds}: not a number of seconds");
            string? orderFile = r.GetValue(order) is { } of ? Path.GetFullPath(of) : null;
            string? recordFile = r.GetValue(record) is { } rf ? Path.GetFullPath(rf) : null;
            double hold = r.GetValue(window);
            if (hold < 0 || double.IsNaN(hold)) throw new UsageException($"--record-window {hold}: not a number of seconds");
            if (hold > 0 && recordFile == null) throw new UsageException("--record-window needs --record-prefetch-order");
            if (orderFile != null && r.GetValue(noOrder)) throw new UsageException("--prefetch-order and --no-prefetch-order exclude each other");
            if (orderFile != null && !File.Exists(orderFile)) throw new UsageException($"--prefetch-order {orderFile}: no such file (record one with --record-prefetch-order)");
            // a run that records takes its pages by fault, not from an earlier recording
            if (orderFile != null && recordFile != null) throw new UsageException("--prefetch-order and --record-prefetch-order exclude each other");
            // From a page server only a named order: one beside local images may not be these pages' (and
            // pushing before restore-finished opens a second connection early, which CRIU's lazy page server refuses).
            if (r.GetValue(noOrder) || recordFile != null || (orderFile == null && r.GetValue(pageServer))) orderFile = "";
            var local = LazyPagesSetup.ForImages(images, common.Work(r), r.GetValue(statusFd), Logger.Crisp,
                peerTimeout: seconds == 0 ? Timeout.InfiniteTimeSpan : TimeSpan.FromSeconds(seconds), prefetchOrder: orderFile, recordOrder: recordFile,
                policy: new LazyPagesPolicy { PrefetchHold = TimeSpan.FromSeconds(hold) });
            var options = local;
            double reconnectSeconds = r.GetValue(reconnect);
            if (reconnectSeconds < 0 || double.IsNaN(reconnectSeconds)) throw new UsageException($"--ps-reconnect-timeout {reconnectSeconds}: not a number of seconds");
            // SIGTERM/SIGINT: the daemon poisons what it has not delivered and removes its socket
            // (the processes must not read zeros, nor hang on a uffd nobody reads); a reconnect in progress stops.
            using var stop = new CancellationTokenSource();
            using var term = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => { c.Cancel = true; stop.Cancel(); });
            using var intr = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => { c.Cancel = true; stop.Cancel(); });
            if (r.GetValue(pageServer))
            {
                var addr = r.GetValue(address) ?? throw new UsageException("--page-server needs --address");
                var creds = tls.Load(r);
                local.PageSource.Dispose();
                options = new LazyPagesOptions
                {
                    WorkDir = local.WorkDir,
                    PlanFor = local.PlanFor,
                    StatusFd = local.StatusFd,
                    Log = local.Log,
                    Policy = local.Policy,
                    PeerTimeout = local.PeerTimeout,
                    PrefetchOrderPath = local.PrefetchOrderPath,
                    RecordOrderPath = local.RecordOrderPath,
                    PageSource = RemotePages.Open(PageServerAddress.Resolve(addr, r.GetValue(port)), images,
                        TimeSpan.FromSeconds(reconnectSeconds), Logger.Crisp.Prefixed("lazy-pages: "), stop.Token, new RemotePageSourceOptions
                        {
                            Transport = creds is null ? Crisp.PageServer.Transport.PageServerTransport.Plain
                                : new Crisp.PageServer.Transport.PageServerTransport { Tls = creds, ServerName = addr.Trim('[', ']') },
                        }),
                };
            }
            using var source = options.PageSource;
            using var daemon = new LazyPagesDaemon(options);
            int rc = daemon.Run(stop.Token);
            foreach (var f in daemon.Failures) Log.E(f);
            Console.Error.WriteLine(daemon.Stats.ToString());
            if (r.GetResult(json) is not null)
            {
                var file = r.GetValue(json);
                if (string.IsNullOrEmpty(file)) Console.WriteLine(daemon.Stats.ToJson());
                else File.WriteAllText(file, daemon.Stats.ToJson());
            }
            return rc == 0 ? CrispCommand.ExitOk : CrispCommand.ExitFailed;
        }));
        return cmd;
    }
}
