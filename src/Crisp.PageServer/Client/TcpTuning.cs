using Crisp.Native;
using System.Net;
using System.Net.Sockets;

namespace Crisp.PageServer.Client;

internal static class TcpTuning
{

    /// <summary>
    /// LibC.TCP_CORK holds partial segments until uncorked, so a 32-byte header and the pages after it
    /// leave as full segments. Uncorking pushes whatever is pending; do it before waiting for a reply.
    /// </summary>
    public static void Cork(Socket socket, bool on) =>
        socket.SetRawSocketOption(LibC.SOL_TCP, LibC.TCP_CORK, BitConverter.GetBytes(on ? 1 : 0));

    /// <summary>Connects with a deadline (Socket.Connect alone may wait for minutes on a dead host).</summary>
    public static Socket Connect(EndPoint server, TimeSpan timeout)
    {
        var socket = new Socket(server.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        try
        {
            using var cts = new CancellationTokenSource(timeout);
            try
            {
                socket.ConnectAsync(server, cts.Token).AsTask().GetAwaiter().GetResult();
            }
            catch (OperationCanceledException)
            {
                throw new SocketException((int)SocketError.TimedOut);
            }
            return socket;
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    /// <summary>Fills <paramref name="buffer"/> from a connection's stream; throws <see cref="Protocol.PeerGoneException"/> on EOF.</summary>
    public static void ReceiveExactly(Stream stream, Span<byte> buffer, string what)
    {
        int got = 0;
        while (got < buffer.Length)
        {
            int n = stream.Read(buffer[got..]);
            if (n == 0)
                throw new Protocol.PeerGoneException($"the page server closed the connection while we waited for {what} ({got} of {buffer.Length} bytes)");
            got += n;
        }
    }

    public static void SendAll(Socket socket, ReadOnlySpan<byte> data)
    {
        while (!data.IsEmpty)
            data = data[socket.Send(data)..];
    }

    /// <summary>Fills <paramref name="buffer"/>; throws <see cref="Protocol.PeerGoneException"/> on EOF.</summary>
    public static void ReceiveExactly(Socket socket, Span<byte> buffer, string what)
    {
        int got = 0;
        while (got < buffer.Length)
        {
            int n = socket.Receive(buffer[got..]);
            if (n == 0)
                throw new Protocol.PeerGoneException($"the page server closed the connection while we waited for {what} ({got} of {buffer.Length} bytes)");
            got += n;
        }
    }
}
