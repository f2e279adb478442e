using System.CommandLine;
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
/// --address, --port.
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
        var cmd = new Command("lazy-pages", "Serve the page faults of lazily restored processes");
        foreach (var o in new Option[] { statusFd, json, pageServer, address, port }) cmd.Options.Add(o);
        common.AddTo(cmd);
        cmd.SetAction(r => CrispCommand.Guard("lazy-pages", () =>
        {
            common.ConfigureLog(r);
            string images = common.Images(r);
            var local = LazyPagesSetup.ForImages(images, common.Work(r), r.GetValue(statusFd), s => Log.I(s));
            var options = local;
            if (r.GetValue(pageServer))
            {
                var addr = r.GetValue(address) ?? throw new UsageException("--page-server needs --address");
                local.PageSource.Dispose();
                options = new LazyPagesOptions
                {
                    WorkDir = local.WorkDir,
                    PlanFor = local.PlanFor,
                    StatusFd = local.StatusFd,
                    Log = local.Log,
                    Policy = local.Policy,
                    PageSource = new RemotePageSource(PageServerAddress.Resolve(addr, r.GetValue(port))),
                };
            }
            using var source = options.PageSource;
            using var daemon = new LazyPagesDaemon(options);
            int rc = daemon.Run(CancellationToken.None);
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
