using System.Net.Sockets;

namespace Crisp.PageServer.Protocol;

/// <summary>The other side broke the protocol: unknown command, unexpected reply, bad dst_id.</summary>
public sealed class PageServerProtocolException : Exception
{
    public PageServerProtocolException(string message) : base(message) { }
}

internal static class SocketErrors
{
    /// <summary>Errors that mean "the peer (or the path to it) went away", as opposed to our own bugs.</summary>
    public static bool IsPeerGone(Exception e) => e switch
    {
        PeerGoneException => true,
        SocketException se => se.SocketErrorCode is SocketError.ConnectionReset or SocketError.ConnectionAborted
            or SocketError.Shutdown or SocketError.NotConnected or SocketError.TimedOut or SocketError.HostUnreachable
            or SocketError.NetworkUnreachable or SocketError.NetworkReset or SocketError.ConnectionRefused
            or SocketError.OperationAborted or SocketError.Interrupted or SocketError.HostDown,
        IOException { InnerException: SocketException inner } => IsPeerGone(inner),
        ObjectDisposedException => true,
        _ => false,
    };
}
