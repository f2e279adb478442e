using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using Crisp.PageServer.Client;

namespace Crisp.PageServer.Transport;

/// <summary>One open connection: the socket (for TCP options and shutdown) and the stream that reads and writes it.</summary>
public sealed class PageServerConnection(Socket socket, Stream stream) : IDisposable
{
    public Socket Socket { get; } = socket;
    public Stream Stream { get; } = stream;

    /// <summary>TLS: sends close_notify (CRIU's gnutls_bye waits for it); plain: nothing.</summary>
    public void ShutdownTls()
    {
        if (Stream is System.Net.Security.SslStream ssl)
        {
            try { ssl.ShutdownAsync().GetAwaiter().GetResult(); }
            catch (Exception e) when (e is IOException or ObjectDisposedException or InvalidOperationException) { }
        }
    }

    public void Dispose()
    {
        Stream.Dispose();
        Socket.Dispose();
    }
}
