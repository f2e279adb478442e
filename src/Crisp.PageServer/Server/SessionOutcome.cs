using System.Net;

namespace Crisp.PageServer.Server;

public enum SessionOutcome
{
    /// <summary>The client sent CLOSE (receive mode) or closed at a message boundary (lazy mode).</summary>
    Completed,
    /// <summary>The peer went away: EOF mid-message, reset, or a dump that never sent CLOSE.</summary>
    PeerGone,
    /// <summary>The peer sent something the protocol does not allow (unknown command, bad dst_id, wrong mode).</summary>
    ProtocolError,
    /// <summary>The page source could not deliver requested pages; the connection was closed, as CRIU does.</summary>
    SourceError,
    /// <summary>Received pages could not be stored (image write failed, disk full); the dump got no acknowledgement.</summary>
    StorageError,
    /// <summary>The server was stopped while the session ran.</summary>
    Cancelled,
    /// <summary>The client failed authentication (TLS handshake, certificate, access key): nothing was read or served.</summary>
    Refused,
    /// <summary>A bug on our side: an exception nobody expected.</summary>
    Fault,
}
