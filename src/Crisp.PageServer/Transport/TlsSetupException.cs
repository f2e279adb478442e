using System.Net.Security;
using System.Security.Authentication;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Crisp.PageServer.Transport;

/// <summary>The TLS files could not be used (missing, unreadable, not PEM, key does not match).</summary>
public sealed class TlsSetupException(string message, Exception? inner = null) : Exception(message, inner);
