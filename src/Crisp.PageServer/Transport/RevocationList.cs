using System.Formats.Asn1;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Crisp.PageServer.Transport;

/// <summary>
/// A CA's certificate revocation list (RFC 5280 §5, PEM "X509 CRL" blocks), read with the BCL's
/// ASN.1 reader; each list's signature is verified with its issuer's key from the trusted CAs
/// before any entry is believed. Answers one question: is this certificate revoked by its issuer?
/// </summary>
internal sealed class RevocationList
{
    private readonly HashSet<(string Issuer, string Serial)> _revoked = new();

    public static RevocationList Load(string path, X509Certificate2Collection trust)
    {
        var list = new RevocationList();
        string text = File.ReadAllText(path);
        int blocks = 0;
        var rest = text.AsMemory();
        while (PemEncoding.TryFind(rest.Span, out var fields))
        {
            var label = rest.Span[fields.Label];
            if (label.SequenceEqual("X509 CRL"))
            {
                var der = Convert.FromBase64String(rest.Span[fields.Base64Data].ToString());
                try { list.Add(der, trust, path); }
                catch (AsnContentException e) { throw new TlsSetupException($"--tls-cacrl {path}: not a revocation list: {e.Message}", e); }
                blocks++;
            }
            rest = rest[fields.Location.End..];
        }
        if (blocks == 0) throw new TlsSetupException($"--tls-cacrl {path}: no \"X509 CRL\" PEM block in it");
        return list;
    }

    public bool IsRevoked(X509Certificate2 cert) =>
        _revoked.Contains((Convert.ToHexString(cert.IssuerName.RawData), cert.SerialNumber.TrimStart('0')));

    private void Add(byte[] der, X509Certificate2Collection trust, string path)
    {
        var outer = new AsnReader(der, AsnEncodingRules.DER).ReadSequence();
        var tbsBytes = outer.ReadEncodedValue();
        var sigAlg = outer.ReadSequence();
        string sigOid = sigAlg.ReadObjectIdentifier();
        var signature = outer.ReadBitString(out _);

        var tbs = new AsnReader(tbsBytes, AsnEncodingRules.DER).ReadSequence();
        if (tbs.PeekTag().HasSameClassAndValue(Asn1Tag.Integer)) tbs.ReadInteger(); // version
        tbs.ReadSequence(); // signature algorithm (repeated inside)
        var issuer = tbs.ReadEncodedValue().ToArray();
        tbs.ReadEncodedValue(); // thisUpdate
        var entries = new List<string>();
        while (tbs.HasData)
        {
            var tag = tbs.PeekTag();
            if (tag.HasSameClassAndValue(Asn1Tag.UtcTime) || tag.HasSameClassAndValue(Asn1Tag.GeneralizedTime))
            {
                tbs.ReadEncodedValue(); // nextUpdate
                continue;
            }
            if (tag.HasSameClassAndValue(Asn1Tag.Sequence))
            {
                var revoked = tbs.ReadSequence();
                while (revoked.HasData)
                {
                    var entry = revoked.ReadSequence();
                    entries.Add(Convert.ToHexString(entry.ReadIntegerBytes().Span).TrimStart('0'));
                }
                continue;
            }
            tbs.ReadEncodedValue(); // [0] extensions
        }

        var issuerCert = trust.FirstOrDefault(c => c.SubjectName.RawData.AsSpan().SequenceEqual(issuer))
            ?? throw new TlsSetupException($"--tls-cacrl {path}: its issuer '{new X500DistinguishedName(issuer).Name}' is not among the trusted CAs");
        if (!VerifySignature(issuerCert, sigOid, tbsBytes.Span, signature))
            throw new TlsSetupException($"--tls-cacrl {path}: the signature does not verify with the key of '{issuerCert.Subject}'");
        string issuerHex = Convert.ToHexString(issuer);
        foreach (var serial in entries) _revoked.Add((issuerHex, serial));
    }

    private static bool VerifySignature(X509Certificate2 issuer, string oid, ReadOnlySpan<byte> data, byte[] signature)
    {
        HashAlgorithmName hash = oid switch
        {
            "1.2.840.113549.1.1.11" or "1.2.840.10045.4.3.2" => HashAlgorithmName.SHA256,
            "1.2.840.113549.1.1.12" or "1.2.840.10045.4.3.3" => HashAlgorithmName.SHA384,
            "1.2.840.113549.1.1.13" or "1.2.840.10045.4.3.4" => HashAlgorithmName.SHA512,
            _ => throw new TlsSetupException($"revocation list signed with unsupported algorithm {oid}"),
        };
        if (issuer.GetRSAPublicKey() is { } rsa)
            using (rsa) return rsa.VerifyData(data, signature, hash, RSASignaturePadding.Pkcs1);
        if (issuer.GetECDsaPublicKey() is { } ec)
            using (ec) return ec.VerifyData(data, signature, hash, DSASignatureFormat.Rfc3279DerSequence);
        throw new TlsSetupException($"revocation list issuer '{issuer.Subject}' has neither an RSA nor an EC key");
    }
}
