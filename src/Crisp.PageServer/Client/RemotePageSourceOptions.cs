using System.Net;
using System.Net.Sockets;
using Crisp.Images;
using Crisp.PageServer.Protocol;
using Crisp.PageServer.Transport;

namespace Crisp.PageServer.Client;

public sealed class RemotePageSourceOptions
{
    /// <summary>Deadline for establishing a channel's connection.</summary>
    public TimeSpan ConnectTimeout { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>
    /// Longest silence tolerated while a reply is due. A fault must never hang: past this the
    /// read fails with <see cref="PageSourceException"/> and the channel reconnects on next use.
    /// </summary>
    public TimeSpan ReceiveTimeout { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>How each channel's connection is opened and authenticated (TLS, access key); plain TCP by default.</summary>
    public PageServerTransport Transport { get; init; } = PageServerTransport.Plain;

    /// <summary>Said on every connection (after the transport's handshake) before the first GET when the server is a crisp lazy dump (CrispHello.cs); null: CRIU's plain protocol.</summary>
    public CrispHello? Hello { get; init; }
}
