using System.Net.Security;
using System.Security.Authentication;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Crisp.PageServer.Transport;

/// <summary>
/// Loaded TLS material and the handshakes that use it (System.Net.Security's SslStream; the
/// chain is verified against our trust anchors only, never the peer's say-so). As in CRIU:
/// the client checks the server certificate's name against the address it connects to, the
/// server checks the client's chain and, when it was given an explicit listen address, the
/// client certificate's name against that address; <c>--tls-no-cn-verify</c> skips the names.
/// </summary>
public sealed class TlsCredentials
{
    private static readonly Oid ServerAuth = new("1.3.6.1.5.5.7.3.1");
    private static readonly Oid ClientAuth = new("1.3.6.1.5.5.7.3.2");

    private readonly SslStreamCertificateContext _own;
    private readonly X509Certificate2Collection _trust;
    private readonly RevocationList? _crl;

    private TlsCredentials(SslStreamCertificateContext own, X509Certificate2Collection trust, RevocationList? crl, bool noCnVerify)
    {
        _own = own;
        _trust = trust;
        _crl = crl;
        NoCnVerify = noCnVerify;
    }

    public bool NoCnVerify { get; }

    /// <summary>Our certificate's subject, for log lines.</summary>
    public string Subject => _own.TargetCertificate.Subject;

    internal static TlsCredentials Load(TlsSettings s)
    {
        var trust = new X509Certificate2Collection();
        if (s.CaCert is not null)
        {
            trust.ImportFromPemFile(Readable(s.CaCert, "--tls-cacert"));
            if (trust.Count == 0) throw new TlsSetupException($"--tls-cacert {s.CaCert}: no certificate in it");
        }
        else
        {
            using (var root = new X509Store(StoreName.Root, StoreLocation.LocalMachine))
            {
                root.Open(OpenFlags.ReadOnly | OpenFlags.OpenExistingOnly);
                trust.AddRange(root.Certificates);
            }
            if (File.Exists(TlsSettings.DefaultCaCert)) trust.ImportFromPemFile(TlsSettings.DefaultCaCert);
        }

        string certPath = Readable(s.Cert ?? TlsSettings.DefaultCert, "--tls-cert");
        string keyPath = Readable(s.Key ?? TlsSettings.DefaultKey, "--tls-key");
        X509Certificate2 leaf;
        try { leaf = X509Certificate2.CreateFromPemFile(certPath, keyPath); }
        catch (CryptographicException e) { throw new TlsSetupException($"--tls-cert {certPath} / --tls-key {keyPath}: {e.Message}", e); }
        var chain = new X509Certificate2Collection();
        chain.ImportFromPemFile(certPath);
        var extra = new X509Certificate2Collection();
        foreach (var c in chain)
            if (c.Thumbprint != leaf.Thumbprint) extra.Add(c);
        var own = SslStreamCertificateContext.Create(leaf, extra, offline: true);

        RevocationList? crl = null;
        string? crlPath = s.CaCrl ?? (File.Exists(TlsSettings.DefaultCaCrl) ? TlsSettings.DefaultCaCrl : null);
        if (crlPath is not null) crl = RevocationList.Load(Readable(crlPath, "--tls-cacrl"), trust);
        return new TlsCredentials(own, trust, crl, s.NoCnVerify);
    }

    private static string Readable(string path, string option)
    {
        try
        {
            using var f = File.OpenRead(path);
            return path;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new TlsSetupException($"{option} {path}: {e.Message}", e);
        }
    }

    /// <summary>Client handshake on <paramref name="inner"/>, bounded by the socket's timeouts. <paramref name="serverName"/>: what the server's certificate must name.</summary>
    public SslStream AuthenticateAsClient(Stream inner, string serverName)
    {
        string? why = null;
        var ssl = new SslStream(inner, leaveInnerStreamOpen: false);
        try
        {
            ssl.AuthenticateAsClient(new SslClientAuthenticationOptions
            {
                TargetHost = serverName,
                ClientCertificateContext = _own,
                CertificateRevocationCheckMode = X509RevocationMode.NoCheck,
                RemoteCertificateValidationCallback = (_, cert, chain, _) =>
                    (why = Verify(cert, chain, NoCnVerify ? null : serverName, ServerAuth, "server")) is null,
            });
            return ssl;
        }
        catch (Exception e) when (e is AuthenticationException or IOException)
        {
            ssl.Dispose();
            throw new PeerRefusedException(why ?? $"TLS handshake failed: {Message(e)}", e);
        }
    }

    /// <summary>Server handshake: a client certificate is required and verified; <paramref name="clientName"/> (if not null) must be named in it.</summary>
    public async Task<SslStream> AuthenticateAsServerAsync(Stream inner, string? clientName, CancellationToken token)
    {
        string? why = null;
        var ssl = new SslStream(inner, leaveInnerStreamOpen: false);
        try
        {
            await ssl.AuthenticateAsServerAsync(new SslServerAuthenticationOptions
            {
                ServerCertificateContext = _own,
                ClientCertificateRequired = true,
                // TLS 1.2 on the server: a TLS 1.3 server sends NewSessionTicket records after
                // the handshake, and CRIU 4.2's client (criu dump --page-server, criu
                // lazy-pages) takes gnutls' answer to them (GNUTLS_E_AGAIN) for a failed read of
                // its first reply and gives up ("The page server doesn't answer"). OpenSSL
                // sends them even with resumption off. Sessions are never resumed here.
                EnabledSslProtocols = SslProtocols.Tls12,
                AllowTlsResume = false,
                CertificateRevocationCheckMode = X509RevocationMode.NoCheck,
                RemoteCertificateValidationCallback = (_, cert, chain, _) =>
                    (why = Verify(cert, chain, NoCnVerify ? null : clientName, ClientAuth, "client")) is null,
            }, token).ConfigureAwait(false);
            return ssl;
        }
        catch (Exception e) when (e is AuthenticationException or IOException)
        {
            await ssl.DisposeAsync().ConfigureAwait(false);
            throw new PeerRefusedException(why ?? $"TLS handshake failed: {Message(e)}", e);
        }
    }

    private static string Message(Exception e) => e.InnerException is { } inner ? $"{e.Message} ({inner.Message})" : e.Message;

    /// <summary>Null if <paramref name="presented"/> chains to our trust anchors, is not revoked and names <paramref name="name"/>; else why not.</summary>
    internal string? Verify(X509Certificate? presented, X509Chain? peerChain, string? name, Oid purpose, string role)
    {
        if (presented is null) return $"the {role} sent no certificate";
        var leaf = presented as X509Certificate2 ?? new X509Certificate2(presented);
        using var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.AddRange(_trust);
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        chain.ChainPolicy.DisableCertificateDownloads = true;
        chain.ChainPolicy.ApplicationPolicy.Add(purpose);
        if (peerChain is not null)
        {
            chain.ChainPolicy.ExtraStore.AddRange(peerChain.ChainPolicy.ExtraStore);
            foreach (var el in peerChain.ChainElements) chain.ChainPolicy.ExtraStore.Add(el.Certificate);
        }
        if (!chain.Build(leaf))
        {
            var status = string.Join("; ", chain.ChainStatus.Select(st => st.StatusInformation.Trim()).Where(st => st.Length > 0).Distinct());
            return $"the {role} certificate '{leaf.Subject}' is not trusted: {(status.Length > 0 ? status : "it does not chain to the trusted CA")}";
        }
        if (_crl is not null)
            foreach (var el in chain.ChainElements)
                if (_crl.IsRevoked(el.Certificate))
                    return $"the {role} certificate '{el.Certificate.Subject}' (serial {el.Certificate.SerialNumber}) is revoked";
        if (name is not null && !leaf.MatchesHostname(name, allowWildcards: true, allowCommonName: true))
            return $"the {role} certificate '{leaf.Subject}' does not name {name} (--tls-no-cn-verify skips this check)";
        return null;
    }
}
