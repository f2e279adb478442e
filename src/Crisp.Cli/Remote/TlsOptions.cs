using System.CommandLine;
using Crisp.Native;
using Crisp.PageServer.Transport;

namespace Crisp.Cli.Remote;

/// <summary>
/// CRIU's TLS options, on every command that talks to a page server or between migrate and the
/// agent: --tls, --tls-cacert, --tls-cacrl, --tls-cert, --tls-key, --tls-no-cn-verify (defaults
/// as CRIU's: /etc/pki/CA/cacert.pem, /etc/pki/CA/cacrl.pem, /etc/pki/criu/cert.pem,
/// /etc/pki/criu/private/key.pem). The file options mean nothing without --tls, as in CRIU.
/// </summary>
public sealed class TlsOptions
{
    public readonly Option<bool> Tls = new("--tls") { Description = "use TLS to secure the connection: both ends present a certificate and verify the other's" };
    public readonly Option<string?> CaCert = new("--tls-cacert") { Description = $"trust certificates signed only by this CA (default: the system's CAs and {TlsSettings.DefaultCaCert})" };
    public readonly Option<string?> CaCrl = new("--tls-cacrl") { Description = $"CA certificate revocation list (default: {TlsSettings.DefaultCaCrl} if it exists)" };
    public readonly Option<string?> Cert = new("--tls-cert") { Description = $"own TLS certificate (default: {TlsSettings.DefaultCert})" };
    public readonly Option<string?> Key = new("--tls-key") { Description = $"own TLS private key (default: {TlsSettings.DefaultKey})" };
    public readonly Option<bool> NoCnVerify = new("--tls-no-cn-verify") { Description = "do not verify the name in the peer's certificate (the chain still is)" };

    public void AddTo(Command cmd)
    {
        foreach (var o in new Option[] { Tls, CaCert, CaCrl, Cert, Key, NoCnVerify }) cmd.Options.Add(o);
    }

    public bool Enabled(ParseResult r) => r.GetValue(Tls);

    /// <summary>The loaded credentials with --tls, else null (then the file options are refused, so a typo is not silently plaintext).</summary>
    public TlsCredentials? Load(ParseResult r)
    {
        if (!r.GetValue(Tls))
        {
            foreach (var o in new Option[] { CaCert, CaCrl, Cert, Key, NoCnVerify })
                if (r.GetResult(o) is { Implicit: false })
                    throw new UsageException($"{o.Name} needs --tls");
            return null;
        }
        try
        {
            var creds = new TlsSettings
            {
                CaCert = r.GetValue(CaCert),
                CaCrl = r.GetValue(CaCrl),
                Cert = r.GetValue(Cert),
                Key = r.GetValue(Key),
                NoCnVerify = r.GetValue(NoCnVerify),
            }.Load();
            Log.I($"tls: certificate {creds.Subject}");
            return creds;
        }
        catch (TlsSetupException e)
        {
            throw new CrispException($"tls: {e.Message}");
        }
    }
}
