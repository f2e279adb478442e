using System.Net.Security;
using System.Security.Authentication;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Crisp.PageServer.Transport;

/// <summary>The peer failed authentication (TLS handshake, certificate, or access key): the connection was closed before any protocol byte.</summary>
public sealed class PeerRefusedException(string message, Exception? inner = null) : IOException(message, inner);
