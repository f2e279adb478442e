using System.CommandLine;
using Crisp.Native;
using Crisp.PageServer.Transport;

namespace Crisp.Cli.Remote;

/// <summary><c>--auth-token-file</c>: migrate and agent's pre-shared token (crisp's own; CRIU has no such option).</summary>
public static class AuthToken
{
    public const int MinLength = 16;

    public static Option<string?> Option() => new("--auth-token-file")
    {
        Description = $"file holding a shared secret (at least {MinLength} bytes; surrounding whitespace ignored): the source sends it first and the agent refuses a connection without it. Authenticates, does not encrypt: prefer --tls on untrusted networks",
    };

    public static byte[] Read(string? path)
    {
        if (path is null) return [];
        byte[] raw;
        try { raw = File.ReadAllBytes(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw new CrispException($"--auth-token-file {path}: {e.Message}"); }
        var token = System.Text.Encoding.UTF8.GetBytes(System.Text.Encoding.UTF8.GetString(raw).Trim());
        if (token.Length < MinLength)
            throw new UsageException($"--auth-token-file {path}: the token has {token.Length} bytes; at least {MinLength} are needed");
        return token;
    }
}
