using Crisp.Native;
using System.Net;
using Crisp.Images;

namespace Crisp.PageServer.Server;

public sealed class PageServerOptions
{
    /// <summary>Address and port to listen on (IPv4 or IPv6 literal; port 0 picks a free one).</summary>
    public required IPEndPoint EndPoint { get; init; }

    /// <summary>Receive mode (what <c>crisp dump --page-server</c> sends): where pagemaps go. Null refuses OPEN/ADD.</summary>
    public IPagemapSink? Sink { get; init; }

    /// <summary>Lazy mode: where GET requests are answered from. Null refuses GET.</summary>
    public IPageSource? Source { get; init; }

    /// <summary>When >= 0: one zero byte is written to this fd once the server listens, then the fd is closed (CRIU's --status-fd).</summary>
    public int StatusFd { get; init; } = -1;

    /// <summary>Largest single socket write (and source read) when answering a GET; also the receive chunk.</summary>
    public int ChunkSize { get; init; } = 1 << 20;

    /// <summary>How long to wait, after acknowledging CLOSE, for the client to close its end.</summary>
    public TimeSpan CloseLingerTimeout { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>How long stopping waits for sessions to wind down (one stuck in a page source read cannot be interrupted).</summary>
    public TimeSpan StopGrace { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>
    /// How long the server waits, with no session running, for a client: from the start, and from
    /// the end of each session. Past it the server stops by itself (<see cref="TcpPageServer.TimedOut"/>).
    /// <see cref="Timeout.InfiniteTimeSpan"/> (the default) or zero: until stopped.
    /// </summary>
    public TimeSpan PeerTimeout { get; init; } = Timeout.InfiniteTimeSpan;

    /// <summary>How a client connection is authenticated (TLS, access key) before the first message; plain TCP by default.</summary>
    public Transport.PageServerTransport Transport { get; init; } = Crisp.PageServer.Transport.PageServerTransport.Plain;

    /// <summary>Who may fetch (a lazy dump's one destination, CrispHello.cs); null: anyone, and every hello is accepted.</summary>
    public Protocol.IClientGate? Gate { get; init; }

    /// <summary>Session and error log (one line per event, each starting "page-server: "); crisp's own by default.</summary>
    public Logger Log { get; init; } = Logger.Crisp;
}
