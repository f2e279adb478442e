using System.Net.Sockets;

namespace Crisp.PageServer.Protocol;

/// <summary>
/// The connection ended under us: EOF in the middle of a message, reset, broken pipe, timeout.
/// This is the normal way for a peer to die and is reported as such, not as a bug.
/// </summary>
public sealed class PeerGoneException : Exception
{
    public PeerGoneException(string message, Exception? inner = null) : base(message, inner) { }
}
