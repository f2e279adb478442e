using System.CommandLine;
using System.Diagnostics;
using Crisp.Migration;
using Crisp.Native;

namespace Crisp.Cli.Remote;

/// <summary>
/// <c>crisp migrate PID --to HOST:PORT</c>: parses, shows progress and prints the result; the
/// migration itself is <see cref="MigrationSource"/>.
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
        var insecure = NetworkExposure.Option();
        var token = AuthToken.Option();
        var tls = new TlsOptions();
        var reconnect = RemoteDumpOptions.ReconnectOption();
        var preCopy = new Option<bool>("--pre-copy") { Description = "send memory in rounds while the process runs (pages written meanwhile are sent again), then freeze and send the rest eagerly" };
        var maxRounds = new Option<int>("--max-rounds") { Description = "--pre-copy: rounds while the process runs, at most", DefaultValueFactory = _ => 8 };
        var tcp = new Commands.TcpOptions(dump: true);
        var moveAddress = new Option<string[]>("--move-address")
        {
            Description = "an address of this network namespace that moves with the process (repeatable): deleted here once it is frozen, " +
                          "added by the agent (on its --move-address-dev) before the restore, so that --tcp-established connections to it go on",
            AllowMultipleArgumentsPerToken = false,
        };
        var cmd = new Command("migrate", "Move a live process to another machine running `crisp agent`");
        cmd.Arguments.Add(pidArg);
        foreach (var o in new Option[] { to, json, timeout, verbosity, insecure, token, reconnect, preCopy, maxRounds, moveAddress }) cmd.Options.Add(o);
        tcp.AddTo(cmd);
        tls.AddTo(cmd);
        cmd.SetAction(r => CrispCommand.Guard("migrate", () =>
        {
            Log.Level = r.GetValue(verbosity);
            double seconds = r.GetValue(timeout);
            if (!(seconds > 0)) throw new UsageException($"--timeout {seconds}: expected a number of seconds above 0");
            var agent = AgentCommand.ParseEndPoint(r.GetValue(to)!, MigrationAgentOptions.DefaultPort);
            // The source serves the frozen tree's pages on the interface that reaches the agent; its
            // per-migration access key travels on the control connection, so that connection must be
            // authenticated (or --insecure accepted) for the key to mean anything.
            NetworkExposure.Check(agent.Address, r.GetValue(insecure), "migrate's page server (on the interface that reaches the agent)",
                authenticated: tls.Enabled(r) || r.GetValue(token) is not null);
            var transport = new Crisp.PageServer.Transport.PageServerTransport
            {
                Tls = tls.Load(r),
                AccessKey = AuthToken.Read(r.GetValue(token)),
                ServerName = AgentHost(r.GetValue(to)!),
            };
            int rounds = r.GetValue(maxRounds);
            if (rounds < 1) throw new UsageException($"--max-rounds {rounds}: expected at least 1");
            var addresses = (r.GetValue(moveAddress) ?? []).Select(a =>
                System.Net.IPAddress.TryParse(a, out var ip) && (ip.AddressFamily != System.Net.Sockets.AddressFamily.InterNetworkV6 || ip.ScopeId == 0) ? ip : throw new UsageException($"--move-address {a}: expected an IPv4 or IPv6 address (its prefix length is the one it has here)")).ToList();
            var progress = new ProgressLine();
            var request = new MigrationRequest
            {
                Progress = r.GetValue(preCopy) ? null : progress.Show,
                Pid = r.GetValue(pidArg),
                Agent = agent,
                Timeout = TimeSpan.FromSeconds(seconds),
                Transport = transport,
                ReconnectTimeout = RemoteDumpOptions.ReconnectSeconds(r.GetValue(reconnect)),
                PreCopy = r.GetValue(preCopy),
                MaxRounds = rounds,
                TcpEstablished = r.GetValue(tcp.Established),
                SkipInFlight = r.GetValue(tcp.SkipInFlight!),
                NetworkLock = tcp.Lock(r),
                MoveAddresses = addresses,
            };
            return Run(request, progress, r.GetValue(json));
        }));
        return cmd;
    }

    /// <summary>The host as typed in --to (what the agent's certificate must name, as CRIU checks its --address).</summary>
    private static string AgentHost(string to)
    {
        if (System.Net.IPEndPoint.TryParse(to, out var ep)) return ep.Address.ToString();
        int colon = to.LastIndexOf(':');
        return (colon > 0 && !to.EndsWith(']') ? to[..colon] : to).Trim('[', ']');
    }

    private static int Run(MigrationRequest request, ProgressLine progress, bool json)
    {
        int pid = request.Pid;
        var agent = request.Agent;
        bool preCopy = request.PreCopy;
        MigrationResult result;
        try
        {
            result = MigrationSource.Run(request);
        }
        finally
        {
            progress.Done();
        }
        var stats = result.Stats;
        int exit;
        if (result.Resumed)
        {
            Log.E($"migrate: {stats.Outcome}; process {pid} was resumed on this machine");
            exit = CrispCommand.ExitFailed;
        }
        else
        {
            exit = stats.Succeeded ? CrispCommand.ExitOk : CrispCommand.ExitFailed;
            if (!stats.Succeeded) Log.E($"migrate: {stats.Outcome}");
        }
        if (stats.Succeeded && preCopy)
            Console.Out.WriteLine($"migrated {pid} to {agent} as pid {stats.DestinationPid}: downtime {stats.DowntimeMs:F1} ms, " +
                                  $"total {stats.TotalMs:F1} ms, {stats.BytesMoved} bytes moved (pre-copy rounds {string.Join('+', stats.PreCopyRoundPages)} pages, {stats.FinalPages} frozen)");
        else if (stats.Succeeded)
            Console.Out.WriteLine($"migrated {pid} to {agent} as pid {stats.DestinationPid}: downtime {stats.DowntimeMs:F1} ms, " +
                                  $"total {stats.TotalMs:F1} ms, {stats.BytesMoved} bytes moved ({stats.PagesDelivered} lazy pages)");
        if (json)
            Console.Out.WriteLine(stats.ToJson());
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
