namespace Crisp.PageServer.Transport;

/// <summary>
/// CRIU's TLS options (<c>--tls-cacert --tls-cacrl --tls-cert --tls-key --tls-no-cn-verify</c>)
/// with CRIU's defaults (criu/tls.c, SYSCONFDIR /etc). Both ends present a certificate and both
/// verify the other's: the server requires a client certificate.
/// </summary>
public sealed class TlsSettings
{
    public const string DefaultCaCert = "/etc/pki/CA/cacert.pem";
    public const string DefaultCaCrl = "/etc/pki/CA/cacrl.pem";
    public const string DefaultCert = "/etc/pki/criu/cert.pem";
    public const string DefaultKey = "/etc/pki/criu/private/key.pem";

    /// <summary>CA certificates to trust (PEM). Null: the system's trusted CAs plus <see cref="DefaultCaCert"/> if it exists.</summary>
    public string? CaCert { get; init; }
    /// <summary>Revocation list (PEM). Null: <see cref="DefaultCaCrl"/> if it is readable, else none.</summary>
    public string? CaCrl { get; init; }
    /// <summary>Own certificate (PEM; further certificates in the file are sent as its chain). Null: <see cref="DefaultCert"/>.</summary>
    public string? Cert { get; init; }
    /// <summary>Own private key (PEM, unencrypted). Null: <see cref="DefaultKey"/>.</summary>
    public string? Key { get; init; }
    /// <summary>Do not check the name in the peer's certificate (the chain is still verified).</summary>
    public bool NoCnVerify { get; init; }

    /// <summary>Reads the files; a missing or unreadable one is an error naming it.</summary>
    public TlsCredentials Load() => TlsCredentials.Load(this);
}
