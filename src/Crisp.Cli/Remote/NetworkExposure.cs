using System.CommandLine;
using System.Net;

namespace Crisp.Cli.Remote;

/// <summary>
/// What listens on a network is authenticated before it reads an image or hands out a page, or
/// the user said otherwise: without --tls (or, for the agent, --auth-token-file) crisp's page
/// servers (page-server, dump --lazy-pages) and the agent accept anyone, so they listen on a
/// loopback address only, unless --insecure accepts that anyone who reaches the port may read the
/// process's memory (and, for the agent, run a process as root). migrate's page server always
/// demands a per-migration access key, and with --tls a certificate as well.
/// </summary>
public static class NetworkExposure
{
    public static Option<bool> Option() =>
        new("--insecure") { Description = "allow listening on a non-loopback address without authentication (anyone who reaches the port can read the memory served, or for the agent run a process as root)" };

    /// <param name="authenticated">clients must authenticate (--tls, --auth-token-file): any address is fine</param>
    public static void Check(IPAddress listen, bool insecure, string what, bool authenticated = false)
    {
        if (authenticated || insecure || IPAddress.IsLoopback(listen)) return;
        string where = listen.Equals(IPAddress.Any) || listen.Equals(IPAddress.IPv6Any) ? "every address" : listen.ToString();
        bool agent = what.Contains("agent");
        throw new UsageException($"{what} would listen on {where} without authentication: whoever reaches it gets the process's memory" +
                                 $"{(agent ? " and runs code as root" : "")}; use --tls{(agent ? " (or --auth-token-file)" : "")}, listen on 127.0.0.1 (or ::1), or pass --insecure to accept that");
    }
}
