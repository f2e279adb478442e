using System.CommandLine;
using Crisp.Checkpoint.Dump;
using Crisp.Migration;
using Crisp.Native;
using Crisp.PageServer;
using Crisp.PageServer.Transport;

namespace Crisp.Cli.Remote;

/// <summary>
/// The network options of <c>crisp dump</c> (CRIU's names): --page-server sends the pages to a
/// page server; --lazy-pages leaves them in the frozen tree and serves them on --address/--port.
/// </summary>
public sealed class RemoteDumpOptions
{
    public readonly Option<bool> PageServer = new("--page-server") { Description = "send pages to a page server at --address/--port instead of writing them locally" };
    public readonly Option<bool> LazyPages = new("--lazy-pages") { Description = "leave memory in the frozen tree and serve it to a lazy restore on --address/--port" };
    public readonly Option<string?> Address = new("--address") { Description = "page server address (--page-server: where to connect; --lazy-pages: where to listen, default all, which needs --insecure)" };
    public readonly Option<int> Port = new("--port") { Description = "page server port", DefaultValueFactory = _ => 27 };
    public readonly Option<int> StatusFd = new("--status-fd") { Description = "--lazy-pages: write one zero byte to this fd once listening", DefaultValueFactory = _ => -1 };
    public readonly Option<bool> Insecure = NetworkExposure.Option();
    public readonly TlsOptions Tls = new();
    public readonly Option<double> LazyTimeout = new("--lazy-timeout") { Description = "--lazy-pages: seconds to wait for the destination's first page request before resuming the tree", DefaultValueFactory = _ => 120 };

    public readonly Option<double> ReconnectTimeout = ReconnectOption();

    /// <summary>The source side's --ps-reconnect-timeout (dump --lazy-pages, migrate).</summary>
    public static Option<double> ReconnectOption() => new("--ps-reconnect-timeout")
    {
        Description = "--lazy-pages: once pages were served, seconds the frozen tree waits for a destination whose connection broke to come back (it asks again for what was in flight) before the transfer is declared lost",
        DefaultValueFactory = _ => LazyDumpServerOptions.DefaultReconnectTimeout.TotalSeconds,
    };

    public static TimeSpan ReconnectSeconds(double seconds) =>
        seconds > 0 ? TimeSpan.FromSeconds(seconds) : throw new UsageException($"--ps-reconnect-timeout {seconds}: expected a number of seconds above 0");

    public void AddTo(Command cmd)
    {
        foreach (var o in new Option[] { PageServer, LazyPages, Address, Port, StatusFd, LazyTimeout, ReconnectTimeout, Insecure }) cmd.Options.Add(o);
        Tls.AddTo(cmd);
    }

    public bool Active(ParseResult r) => r.GetValue(PageServer) || r.GetValue(LazyPages);
}
