using Crisp.Native;
using System.Net;
using Crisp.Images;
using Crisp.PageServer.Protocol;

namespace Crisp.PageServer.Client;

/// <summary>
/// How a lazy-pages daemon (<c>crisp lazy-pages --page-server</c>, the agent's) gets its pages from
/// a page server: crisp's hello when the images come from a crisp lazy dump (CrispHello.cs), and
/// channels that reconnect when a connection breaks (ReconnectingPageSource.cs).
/// </summary>
public static class RemotePages
{
    /// <summary>The default of <c>--ps-reconnect-timeout</c> on the destination (the source waits longer: LazyDumpServerOptions).</summary>
    public static readonly TimeSpan DefaultReconnectTimeout = TimeSpan.FromSeconds(30);

    /// <param name="imagesDir">the restore's images (a crisp lazy dump left its session id there)</param>
    /// <param name="reconnectTimeout">how long one outage may last; zero: a broken connection fails its request at once</param>
    /// <param name="log">where a broken connection and its re-establishment are reported (a warning: the user should know)</param>
    /// <param name="options">connection options (timeouts); its Hello is set here from the images</param>
    public static IPageSource Open(EndPoint server, string imagesDir, TimeSpan reconnectTimeout, Logger? log = null,
        CancellationToken cancel = default, RemotePageSourceOptions? options = null)
    {
        options ??= new RemotePageSourceOptions();
        if (CrispHello.ReadSession(imagesDir) is ulong session)
        {
            options = new RemotePageSourceOptions
            {
                ConnectTimeout = options.ConnectTimeout,
                ReceiveTimeout = options.ReceiveTimeout,
                Transport = options.Transport,
                Hello = new CrispHello(session, CrispHello.NewId()),
            };
        }
        var remote = new RemotePageSource(server, options);
        if (reconnectTimeout <= TimeSpan.Zero) return remote;
        return new ReconnectingPageSource(remote, $"page server {server}", reconnectTimeout, log, cancel);
    }
}
