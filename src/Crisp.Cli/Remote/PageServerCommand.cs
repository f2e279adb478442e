using System.CommandLine;
using System.Runtime.InteropServices;
using Crisp.Images;
using Crisp.Native;
using Crisp.PageServer;
using Crisp.PageServer.Server;
using Crisp.PageServer.Transport;

namespace Crisp.Cli.Remote;

/// <summary>
/// <c>crisp page-server -D DIR --address A --port P [--lazy-pages] [--status-fd N] [-d]</c>.
/// Without --lazy-pages it receives dumps (<c>crisp dump --page-server</c> or <c>criu dump
/// --page-server</c>) into DIR; with it, it serves lazy restores from the pages images in DIR.
/// Unlike CRIU's, which ends after one session, it serves any number of them until SIGTERM/SIGINT
/// (exit 0), or until no client has come for --peer-timeout seconds (exit 1 if none ever came).
/// -d forks to the background as CRIU does: crisp re-executes itself detached (setsid) and exits
/// once the child listens.
/// </summary>
public static class PageServerCommand
{
    public static Command Create()
    {
        var common = new CommonOptions();
        var address = new Option<string?>("--address") { Description = "address to listen on (default: all, which needs --insecure)" };
        var port = new Option<int>("--port") { Description = "port to listen on (0: any free one, printed)", DefaultValueFactory = _ => 27 };
        var lazy = new Option<bool>("--lazy-pages") { Description = "serve lazy restores from the pages images instead of receiving dumps" };
        var statusFd = new Option<int>("--status-fd") { Description = "write one zero byte to this fd once listening, then close it", DefaultValueFactory = _ => -1 };
        var daemon = new Option<bool>("--daemon", "-d") { Description = "detach and run in the background once listening" };
        var insecure = NetworkExposure.Option();
        var peerTimeout = new Option<double>("--peer-timeout")
        {
            Description = "seconds without any client (from the start and after each session) before the server stops; exit 1 if none ever came; 0: forever",
            DefaultValueFactory = _ => 300,
        };
        var tls = new TlsOptions();
        var cmd = new Command("page-server", "Receive dumped pages over the network, or serve them to lazy restores");
        foreach (var o in new Option[] { address, port, lazy, statusFd, daemon, peerTimeout, insecure }) cmd.Options.Add(o);
        tls.AddTo(cmd);
        common.AddTo(cmd);
        cmd.SetAction(r => CrispCommand.Guard("page-server", () =>
        {
            common.ConfigureLog(r);
            var endpoint = PageServerAddress.ParseListen(r.GetValue(address), r.GetValue(port));
            NetworkExposure.Check(endpoint.Address, r.GetValue(insecure), "page-server", authenticated: tls.Enabled(r));
            var creds = tls.Load(r); // before -d: a bad certificate fails in the foreground
            if (r.GetValue(daemon))
                return Daemonize.Run(r.GetValue(statusFd));
            double seconds = r.GetValue(peerTimeout);
            if (seconds < 0 || double.IsNaN(seconds)) throw new UsageException($"--peer-timeout {seconds}: not a number of seconds");
            var dir = r.GetValue(lazy) ? new ImageDir(common.Images(r)) : ImageDir.Create(common.Images(r));
            using var source = r.GetValue(lazy) ? new ImageDirPageSource(dir) : null;
            var server = new TcpPageServer(new PageServerOptions
            {
                EndPoint = endpoint,
                Sink = r.GetValue(lazy) ? null : new ImageDirPagemapSink(dir),
                Source = source,
                StatusFd = r.GetValue(statusFd),
                // CRIU checks the client certificate's name against an explicit --address.
                Transport = creds is null ? PageServerTransport.Plain : new PageServerTransport { Tls = creds, ClientName = r.GetValue(address) },
                PeerTimeout = seconds == 0 ? Timeout.InfiniteTimeSpan : TimeSpan.FromSeconds(seconds),
            });
            using var stop = new CancellationTokenSource();
            using var term = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => { c.Cancel = true; stop.Cancel(); });
            using var intr = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => { c.Cancel = true; stop.Cancel(); });
            server.Start();
            var listening = server.LocalEndPoint;
            Console.Out.WriteLine($"page-server: listening on {listening}");
            Console.Out.Flush();
            server.RunAsync(stop.Token).GetAwaiter().GetResult();
            server.DisposeAsync().AsTask().GetAwaiter().GetResult();
            if (server.TimedOut && server.SessionsStarted == 0)
            {
                Log.E($"page-server: no client came to {listening} within {seconds:0.###} s; giving up");
                return CrispCommand.ExitFailed;
            }
            return CrispCommand.ExitOk;
        }));
        return cmd;
    }

}

/// <summary>
/// CRIU's -d for a .NET program (which cannot fork): re-execute this very command line without
/// -d, in a new session, with stdio on /dev/null (or the log), and a pipe as its --status-fd; exit
/// once the child wrote its readiness byte (then pass it on to our own --status-fd), or fail if the
/// child died first.
/// </summary>
internal static unsafe class Daemonize
{
    public static int Run(int callerStatusFd)
    {
        var argv = ReadCmdline();
        var childArgs = new List<string>();
        for (int i = 0; i < argv.Count; i++)
        {
            string a = argv[i];
            if (i > 0 && (a == "-d" || a == "--daemon")) continue;
            if (i > 0 && a == "--status-fd") { i++; continue; }
            if (i > 0 && a.StartsWith("--status-fd=", StringComparison.Ordinal)) continue;
            childArgs.Add(a);
        }
        const int childFd = 3;
        childArgs.Add("--status-fd");
        childArgs.Add(childFd.ToString());
        int* p = stackalloc int[2];
        Errno.Check(LibC.pipe2(p, LibC.O_CLOEXEC), "pipe2", "daemon status pipe");
        int pid;
        try
        {
            pid = ProcessSpawner.Spawn(new SpawnOptions
            {
                Path = "/proc/self/exe",
                Argv = childArgs,
                Envp = Environment.GetEnvironmentVariables().Cast<System.Collections.DictionaryEntry>()
                    .Select(e => $"{e.Key}={e.Value}").ToList(),
                Stdin = StdioSource.DevNull(false),
                Stdout = StdioSource.DevNull(true),
                Stderr = StdioSource.DevNull(true),
                ExtraFds = [(p[1], childFd)],
                NewSession = true,
            });
        }
        finally
        {
            LibC.close(p[1]);
        }
        if (!StatusFd.Await(p[0]))
        {
            int status = ProcessSpawner.Wait(pid, LibC.WNOHANG);
            throw new CrispException($"the background page server (pid {pid}) exited before listening" +
                (status >= 0 && LibC.WIFEXITED(status) ? $" with status {LibC.WEXITSTATUS(status)}" : ""));
        }
        StatusFd.Report(callerStatusFd);
        Console.Out.WriteLine($"page-server: running in the background as pid {pid}");
        return CrispCommand.ExitOk;
    }

    private static List<string> ReadCmdline()
    {
        var bytes = File.ReadAllBytes("/proc/self/cmdline");
        return System.Text.Encoding.UTF8.GetString(bytes).TrimEnd('\0').Split('\0').ToList();
    }
}
