using Crisp.Native;
using System.Net.Sockets;

namespace Crisp.PageServer.Server;

/// <summary>
/// A session whose client vanished without a FIN or RST (a dead path, a host gone) would stay
/// "active" until TCP gives up on its own, about 15 minutes for unacknowledged data and never for
/// an idle connection, and a lazy dump would keep its tree frozen for it. Keepalive probes find an
/// idle dead peer in about 25 s, TCP_USER_TIMEOUT aborts a send nobody acknowledges for 30 s; a live
/// client, busy or idle, answers both.
/// </summary>
internal static class DeadPeerDetection
{
    private const int TCP_USER_TIMEOUT = 18;

    public static void Apply(Socket socket)
    {
        try
        {
            socket.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.KeepAlive, true);
            socket.SetSocketOption(SocketOptionLevel.Tcp, SocketOptionName.TcpKeepAliveTime, 10);
            socket.SetSocketOption(SocketOptionLevel.Tcp, SocketOptionName.TcpKeepAliveInterval, 5);
            socket.SetSocketOption(SocketOptionLevel.Tcp, SocketOptionName.TcpKeepAliveRetryCount, 3);
            socket.SetRawSocketOption(LibC.SOL_TCP, TCP_USER_TIMEOUT, BitConverter.GetBytes(30_000));
        }
        catch (SocketException)
        {
            // the client is already gone: the session's first read says so
        }
    }
}
