using System.Net;
using System.Numerics;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Crisp.TestSupport;

namespace Crisp.Integration.Tests.Support;

/// <summary>
/// Certificates made by the test (.NET's CertificateRequest), written as PEM into a temp dir:
/// a CA, leaves it signed for 127.0.0.1 / localhost (what CRIU's and crisp's name checks see on
/// loopback), and a second, unrelated CA with its own leaf.
/// </summary>
public sealed class TestPki
{
    public string CaCert { get; }
    public string OtherCaCert { get; }
    private readonly X509Certificate2 _ca, _otherCa;
    private readonly string _dir;
    private long _serial = 100;

    public TestPki(TempDir dir)
    {
        _dir = dir["pki"];
        Directory.CreateDirectory(_dir);
        _ca = MakeCa("crisp test CA");
        _otherCa = MakeCa("some other CA");
        CaCert = Write("ca.pem", _ca.ExportCertificatePem());
        OtherCaCert = Write("other-ca.pem", _otherCa.ExportCertificatePem());
    }

    /// <summary>A leaf (usable as server and client) signed by the test CA, or by the other CA.</summary>
    public (string Cert, string Key, X509Certificate2 Certificate) Leaf(string name, bool otherCa = false, string host = "127.0.0.1")
    {
        using var key = RSA.Create(2048);
        var req = new CertificateRequest($"CN={host}, O={name}", key, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
        var san = new SubjectAlternativeNameBuilder();
        if (IPAddress.TryParse(host, out var ip)) san.AddIpAddress(ip); else san.AddDnsName(host);
        san.AddDnsName("localhost");
        req.CertificateExtensions.Add(san.Build());
        req.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, true));
        req.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature | X509KeyUsageFlags.KeyEncipherment, true));
        req.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.1"), new Oid("1.3.6.1.5.5.7.3.2")], false));
        var issuer = otherCa ? _otherCa : _ca;
        req.CertificateExtensions.Add(X509AuthorityKeyIdentifierExtension.CreateFromCertificate(issuer, true, false));
        var serial = BitConverter.GetBytes(Interlocked.Increment(ref _serial)).Reverse().ToArray();
        var cert = req.Create(issuer, DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddDays(1), serial);
        return (Write($"{name}-cert.pem", cert.ExportCertificatePem()), Write($"{name}-key.pem", key.ExportPkcs8PrivateKeyPem()), cert);
    }

    /// <summary>A revocation list of the test CA naming <paramref name="revoked"/>.</summary>
    public string Crl(params X509Certificate2[] revoked)
    {
        var b = new CertificateRevocationListBuilder();
        foreach (var c in revoked) b.AddEntry(c);
        var der = b.Build(_ca, BigInteger.One, DateTimeOffset.UtcNow.AddDays(1), HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
        return Write("crl.pem", PemEncoding.WriteString("X509 CRL", der));
    }

    /// <summary>crisp's (and CRIU's) TLS options for a leaf: --tls --tls-cacert --tls-cert --tls-key.</summary>
    public string[] Args((string Cert, string Key, X509Certificate2 _) leaf, string? ca = null) =>
        ["--tls", "--tls-cacert", ca ?? CaCert, "--tls-cert", leaf.Cert, "--tls-key", leaf.Key];

    private static X509Certificate2 MakeCa(string name)
    {
        using var key = RSA.Create(2048);
        var req = new CertificateRequest($"CN={name}", key, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
        req.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        req.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
        req.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(req.PublicKey, false));
        return req.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-10), DateTimeOffset.UtcNow.AddDays(2));
    }

    private string Write(string name, string pem)
    {
        string path = Path.Combine(_dir, name);
        File.WriteAllText(path, pem + "\n");
        return path;
    }
}
