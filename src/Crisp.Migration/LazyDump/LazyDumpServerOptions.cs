using System.Net;

namespace Crisp.Migration;

public sealed class LazyDumpServerOptions
{
    public required IPEndPoint EndPoint { get; init; }
    /// <summary>How destinations authenticate (TLS, access key) before they get a page; plain TCP by default.</summary>
    public Crisp.PageServer.Transport.PageServerTransport Transport { get; init; } = Crisp.PageServer.Transport.PageServerTransport.Plain;
    /// <summary>CRIU's --status-fd: one zero byte once the page server listens.</summary>
    public int StatusFd { get; init; } = -1;
    /// <summary>
    /// How long to wait for the destination's first page request, connected or not (<c>--lazy-timeout</c>).
    /// No page asked for by then: the destination cannot have run, and the source is resumed.
    /// </summary>
    public TimeSpan FirstPageTimeout { get; init; } = TimeSpan.FromSeconds(120);
    /// <summary>
    /// After pages were delivered: how long the destination may stay disconnected (its connection
    /// broke; it reconnects) before the transfer is declared lost and the tree killed
    /// (<c>--ps-reconnect-timeout</c>). Longer than the destination's own reconnect timeout, so the
    /// source is still there for as long as the destination tries.
    /// </summary>
    public TimeSpan ReconnectTimeout { get; init; } = DefaultReconnectTimeout;

    public static readonly TimeSpan DefaultReconnectTimeout = TimeSpan.FromSeconds(60);
    /// <summary>Called once the server listens, with the bound endpoint (e.g. to start a migration's restore).</summary>
    public Action<IPEndPoint>? Listening { get; init; }
    /// <summary>Progress: (delivered lazy pages, total lazy pages, bytes sent), a few times a second.</summary>
    public Action<ulong, ulong, long>? Progress { get; init; }
    /// <summary>
    /// End on SIGTERM/SIGINT as on any other end of the transfer (resume if nothing was delivered,
    /// else kill). A command sets it; an in-process user that has its own signal policy does not.
    /// </summary>
    public bool HandleSignals { get; init; } = true;
}
