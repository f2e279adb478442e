using System.CommandLine;
using System.Net;
using System.Runtime.InteropServices;
using Crisp.Migration;
using Crisp.Native;

namespace Crisp.Cli.Remote;

/// <summary>
/// <c>crisp agent --listen ADDR:PORT</c>: parses and prints; the agent itself is
/// <see cref="MigrationAgent"/>. Serves migrations until SIGTERM/SIGINT.
/// </summary>
public static class AgentCommand
{
    public static Command Create()
    {
        var listen = new Option<string>("--listen") { Description = $"ADDR:PORT to listen on (default 127.0.0.1:{MigrationAgentOptions.DefaultPort}; port 0 picks one)", DefaultValueFactory = _ => $"127.0.0.1:{MigrationAgentOptions.DefaultPort}" };
        var workDir = new Option<string?>("--work-dir", "-W") { Description = "where per-migration image directories are made (default: the temp directory)" };
        var timeout = new Option<double>("--timeout") { Description = "seconds a source may stay silent while it sends a migration before it is dropped", DefaultValueFactory = _ => 30 };
        var maxConcurrent = new Option<int>("--max-concurrent") { Description = "migrations served at once (more wait their turn)", DefaultValueFactory = _ => 4 };
        var logFile = new Option<string?>("--log-file", "-o") { Description = "log file, relative to the work directory unless absolute" };
        var verbosity = new Option<int>("--verbosity", "-v") { Description = "log level 0-4", DefaultValueFactory = _ => 3, Arity = ArgumentArity.ZeroOrOne };
        var insecure = NetworkExposure.Option();
        var token = AuthToken.Option();
        var tls = new TlsOptions();
        var reconnect = new Option<double>("--ps-reconnect-timeout")
        {
            Description = "seconds a migration's lazy-pages daemon keeps trying to re-establish a broken page connection before the pages not yet delivered are lost (the process is killed); 0: do not reconnect",
            DefaultValueFactory = _ => Crisp.PageServer.Client.RemotePages.DefaultReconnectTimeout.TotalSeconds,
        };
        var moveDev = new Option<string?>("--move-address-dev")
        {
            Description = "the device that addresses a source moves with its process (its --move-address) are added on before the restore; " +
                          "without it the agent moves no address and refuses a source that asks",
        };
        var cmd = new Command("agent", "Receive live migrations (crisp migrate PID --to HOST:PORT)");
        foreach (var o in new Option[] { listen, workDir, timeout, maxConcurrent, logFile, verbosity, insecure, token, reconnect, moveDev }) cmd.Options.Add(o);
        tls.AddTo(cmd);
        cmd.SetAction(r => CrispCommand.Guard("agent", () =>
        {
            Log.Level = r.GetValue(verbosity);
            if (r.GetValue(logFile) is { } file)
            {
                string work = Path.GetFullPath(r.GetValue(workDir) ?? Path.GetTempPath());
                Directory.CreateDirectory(work);
                Log.OpenFile(Path.IsPathRooted(file) ? file : Path.Combine(work, file));
            }
            double seconds = r.GetValue(timeout);
            if (!(seconds > 0)) throw new UsageException($"--timeout {seconds}: expected a number of seconds above 0");
            double reconnectSeconds = r.GetValue(reconnect);
            if (reconnectSeconds < 0 || double.IsNaN(reconnectSeconds)) throw new UsageException($"--ps-reconnect-timeout {reconnectSeconds}: not a number of seconds");
            int concurrent = r.GetValue(maxConcurrent);
            if (concurrent < 1) throw new UsageException($"--max-concurrent {concurrent}: expected at least 1");
            var listenAt = ParseEndPoint(r.GetValue(listen)!, MigrationAgentOptions.DefaultPort);
            NetworkExposure.Check(listenAt.Address, r.GetValue(insecure), "agent",
                authenticated: tls.Enabled(r) || r.GetValue(token) is not null);
            var transport = new Crisp.PageServer.Transport.PageServerTransport { Tls = tls.Load(r), AccessKey = AuthToken.Read(r.GetValue(token)) };
            using var agent = new MigrationAgent(new MigrationAgentOptions
            {
                Listen = listenAt,
                BaseDir = r.GetValue(workDir),
                PeerTimeout = TimeSpan.FromSeconds(seconds),
                MaxConcurrent = concurrent,
                Transport = transport,
                ReconnectTimeout = TimeSpan.FromSeconds(reconnectSeconds),
                MoveAddressDevice = r.GetValue(moveDev) is { } dev
                    ? (Crisp.Migration.Addresses.MovedAddress.DeviceExists(dev) ? dev : throw new UsageException($"--move-address-dev {dev}: no such device here"))
                    : null,
            });
            using var stop = new CancellationTokenSource();
            using var term = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => { c.Cancel = true; stop.Cancel(); });
            using var intr = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => { c.Cancel = true; stop.Cancel(); });
            Console.Out.WriteLine($"agent: listening on {agent.LocalEndPoint} ({transport})");
            Console.Out.Flush();
            agent.Run(stop.Token);
            return CrispCommand.ExitOk;
        }));
        return cmd;
    }

    internal static IPEndPoint ParseEndPoint(string text, int defaultPort)
    {
        if (IPEndPoint.TryParse(text, out var ep) && (ep.Port != 0 || text.EndsWith(":0", StringComparison.Ordinal)))
            return ep;
        if (IPAddress.TryParse(text.Trim('[', ']'), out var ip)) return new IPEndPoint(ip, defaultPort);
        int colon = text.LastIndexOf(':');
        if (colon > 0 && int.TryParse(text.AsSpan(colon + 1), out int port))
            return Crisp.PageServer.PageServerAddress.Resolve(text[..colon], port);
        throw new UsageException($"'{text}' is not ADDR:PORT");
    }
}
