using System.CommandLine;
using Crisp.Checkpoint.Dump;
using Crisp.Migration;
using Crisp.Native;
using Crisp.PageServer;
using Crisp.PageServer.Transport;

namespace Crisp.Cli.Remote;

/// <summary>Parses and prints for <c>crisp dump --page-server / --lazy-pages</c>; the work is in Crisp.Migration.</summary>
public static class RemoteDump
{
    /// <summary>Runs a dump with --page-server or --lazy-pages; <paramref name="baseOptions"/> holds pid, dir, -R.</summary>
    public static int Run(ParseResult r, RemoteDumpOptions o, DumpOptions baseOptions)
    {
        bool lazy = r.GetValue(o.LazyPages), toServer = r.GetValue(o.PageServer);
        int port = r.GetValue(o.Port);
        if (lazy && toServer)
            throw new UsageException("--lazy-pages with --page-server is not supported: a lazy dump is its own page server");
        if (toServer)
        {
            var address = r.GetValue(o.Address) ?? throw new UsageException("--page-server needs --address");
            var endpoint = PageServerAddress.Resolve(address, port);
            var creds = o.Tls.Load(r);
            var transport = creds is null ? null : new PageServerTransport { Tls = creds, ServerName = address.Trim('[', ']') };
            var result = PageServerDump.Run(baseOptions, endpoint, transport);
            Log.I($"dumped {result.Processes} process(es), {result.Threads} thread(s), {result.PagesWritten} pages to {endpoint} in {result.Total.TotalMilliseconds:F1} ms");
            return CrispCommand.ExitOk;
        }

        double timeout = r.GetValue(o.LazyTimeout);
        if (!(timeout > 0)) throw new UsageException($"--lazy-timeout {timeout}: expected a number of seconds above 0");
        var listen = PageServerAddress.ParseListen(r.GetValue(o.Address), port);
        NetworkExposure.Check(listen.Address, r.GetValue(o.Insecure), "dump --lazy-pages", authenticated: o.Tls.Enabled(r));
        var lazyCreds = o.Tls.Load(r);
        var server = new LazyDumpServer(new LazyDumpServerOptions
        {
            EndPoint = listen,
            StatusFd = r.GetValue(o.StatusFd),
            Transport = lazyCreds is null ? PageServerTransport.Plain : new PageServerTransport { Tls = lazyCreds, ClientName = r.GetValue(o.Address) },
            FirstPageTimeout = TimeSpan.FromSeconds(timeout),
            ReconnectTimeout = RemoteDumpOptions.ReconnectSeconds(r.GetValue(o.ReconnectTimeout)),
            Listening = ep => { Console.Out.WriteLine($"dump: lazy page server listening on {ep}"); Console.Out.Flush(); },
        });
        var lazyResult = LazyDump.Run(baseOptions, server);
        if (lazyResult.Resumed)
        {
            Log.E($"dump: lazy transfer failed: {lazyResult.Outcome}; process {baseOptions.Pid} was resumed as it was");
            return CrispCommand.ExitFailed;
        }
        if (!lazyResult.Succeeded)
        {
            Log.E($"dump: lazy transfer failed: {lazyResult.Outcome}");
            return CrispCommand.ExitFailed;
        }
        Log.I($"lazy dump of {baseOptions.Pid}: {lazyResult.Dump.PagesWritten} pages in the images, {lazyResult.Outcome}, {lazyResult.BytesSent} bytes sent");
        return CrispCommand.ExitOk;
    }
}
