using System.Net.Sockets;

namespace Crisp.PageServer.Protocol;

/// <summary>The other side broke the protocol: unknown command, unexpected reply, bad dst_id.</summary>
public sealed class PageServerProtocolException : Exception
{
    public PageServerProtocolException(string message) : base(message) { }
}

/// <summary>
/// The connection ended under us: EOF in the middle of a message, reset, broken pipe, timeout.
/// This is the normal way for a peer to die and is reported as such, not as a bug.
/// </summary>
public sealed class PeerGoneException : Exception
{
    public PeerGoneException(string message, Exception? inner = null) : base(message, inner) { }
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
