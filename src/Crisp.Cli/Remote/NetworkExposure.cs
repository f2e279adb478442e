using System.CommandLine;
using System.Net;

namespace Crisp.Cli.Remote;

/// <summary>
/// What listens on a network is authenticated before it reads an image or hands out a page, or
/// the user said otherwise: crisp's page servers (page-server, dump --lazy-pages, the source of
/// migrate) and the agent speak plaintext without authentication, so they listen on a loopback
/// address only, unless --insecure accepts that anyone who reaches the port may read the
/// process's memory (and, for the agent, run a process as root).
/// </summary>
public static class NetworkExposure
{
    public static Option<bool> Option() =>
        new("--insecure") { Description = "allow listening on a non-loopback address without authentication (anyone who reaches the port can read the memory served, or for the agent run a process as root)" };

    public static void Check(IPAddress listen, bool insecure, string what)
    {
        if (insecure || IPAddress.IsLoopback(listen)) return;
        string where = listen.Equals(IPAddress.Any) || listen.Equals(IPAddress.IPv6Any) ? "every address" : listen.ToString();
        throw new UsageException($"{what} would listen on {where} without authentication: whoever reaches it gets the process's memory" +
                                 $"{(what.Contains("agent") ? " and runs code as root" : "")}; listen on 127.0.0.1 (or ::1), or pass --insecure to accept that");
    }
}
