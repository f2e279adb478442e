using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using Crisp.PageServer.Client;

namespace Crisp.PageServer.Transport;

/// <summary>
/// How a connection of the page-server protocol (and of crisp's migration control wire) is
/// opened: plain TCP, or TLS (CRIU's <c>--tls</c>: the handshake runs right after the TCP
/// connect/accept, before the first protocol byte), optionally followed by an access key that
/// the client sends and the server compares before it reads anything else (crisp's own
/// pre-shared token; CRIU knows nothing of it, so it is only used between crisp's migrate and
/// agent). Everything after is a <see cref="Stream"/>: a <see cref="NetworkStream"/> when plain,
/// so the plaintext path stays the socket's own.
/// </summary>
public sealed class PageServerTransport
{
    public static readonly PageServerTransport Plain = new();

    /// <summary>Null: no TLS.</summary>
    public TlsCredentials? Tls { get; init; }

    /// <summary>Empty: none. Otherwise the client sends exactly these bytes first, and the server refuses a client that does not.</summary>
    public ReadOnlyMemory<byte> AccessKey { get; init; }

    /// <summary>Client side: the name the server's certificate must carry (CRIU: the --address given). Null: the address connected to.</summary>
    public string? ServerName { get; init; }

    /// <summary>Server side: the name a client's certificate must carry (CRIU: the server's explicit --address). Null: the chain alone decides.</summary>
    public string? ClientName { get; init; }

    /// <summary>Server side: how long a client may take to authenticate before it is dropped.</summary>
    public TimeSpan HandshakeTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>A peer must prove something before it is served.</summary>
    public bool Authenticates => Tls is not null || !AccessKey.IsEmpty;

    public override string ToString() => (Tls is not null, !AccessKey.IsEmpty) switch
    {
        (true, true) => "TLS and access key",
        (true, false) => "TLS",
        (false, true) => "access key",
        _ => "plaintext",
    };

    /// <summary>
    /// Connects with a deadline, sets <paramref name="ioTimeout"/> on every later read and write
    /// (the handshake included) and authenticates. Infinite: no bound after the connect.
    /// </summary>
    public PageServerConnection Connect(EndPoint server, TimeSpan connectTimeout, TimeSpan ioTimeout)
    {
        var socket = TcpTuning.Connect(server, connectTimeout);
        try
        {
            int ms = ioTimeout == Timeout.InfiniteTimeSpan ? 0 : (int)Math.Clamp(ioTimeout.TotalMilliseconds, 1, int.MaxValue);
            socket.ReceiveTimeout = ms;
            socket.SendTimeout = ms;
            return Open(socket, server);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    /// <summary>Authenticates on a connected socket (the client's side); the connection owns the socket from here.</summary>
    public PageServerConnection Open(Socket socket, EndPoint server)
    {
        Stream stream = new NetworkStream(socket, ownsSocket: false);
        try
        {
            if (Tls is not null)
                stream = Tls.AuthenticateAsClient(stream, ServerName ?? ((IPEndPoint)server).Address.ToString());
            if (!AccessKey.IsEmpty) stream.Write(AccessKey.Span);
            return new PageServerConnection(socket, stream);
        }
        catch
        {
            stream.Dispose();
            throw;
        }
    }

    /// <summary>
    /// The server's side: authenticates an accepted client within <see cref="HandshakeTimeout"/>.
    /// Throws <see cref="PeerRefusedException"/> when it fails; nothing of the protocol was read then.
    /// </summary>
    public async Task<Stream> AcceptAsync(Socket socket, CancellationToken token)
    {
        Stream stream = new NetworkStream(socket, ownsSocket: false);
        if (!Authenticates) return stream;
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(token);
        deadline.CancelAfter(HandshakeTimeout);
        try
        {
            if (Tls is not null)
                stream = await Tls.AuthenticateAsServerAsync(stream, ClientName, deadline.Token).ConfigureAwait(false);
            if (!AccessKey.IsEmpty)
            {
                var got = new byte[AccessKey.Length];
                int n = 0;
                while (n < got.Length)
                {
                    int r = await stream.ReadAsync(got.AsMemory(n), deadline.Token).ConfigureAwait(false);
                    if (r == 0) break;
                    n += r;
                }
                if (n < got.Length || !CryptographicOperations.FixedTimeEquals(got, AccessKey.Span))
                    throw new PeerRefusedException(n < got.Length
                        ? $"the client closed the connection before sending the access key ({n} of {got.Length} bytes)"
                        : "the client sent a wrong access key");
            }
            return stream;
        }
        catch (OperationCanceledException) when (!token.IsCancellationRequested)
        {
            await stream.DisposeAsync().ConfigureAwait(false);
            throw new PeerRefusedException($"the client did not authenticate within {HandshakeTimeout.TotalSeconds:0.#} s");
        }
        catch (IOException e) when (e is not PeerRefusedException)
        {
            await stream.DisposeAsync().ConfigureAwait(false);
            throw new PeerRefusedException($"the client went away while authenticating: {e.Message}", e);
        }
        catch
        {
            await stream.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>A fresh random access key (for one migration's page server).</summary>
    public static byte[] NewAccessKey() => Crisp.Native.KernelRandom.Bytes(32);
}
