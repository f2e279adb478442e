using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using Xunit;

namespace Crisp.TestSupport;

/// <summary>
/// CRIU's image tool, the judge of whether an image is well-formed. Missing crit is a failure,
/// never a skip: the compatibility promise cannot be checked without it (.ci/run installs it).
/// </summary>
public static class Crit
{
    private static readonly string? Found = Find();

    private static string? Find()
    {
        if (System.IO.File.Exists("/usr/bin/crit")) return "/usr/bin/crit";
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':'))
            if (dir.Length > 0 && System.IO.File.Exists(System.IO.Path.Combine(dir, "crit")))
                return System.IO.Path.Combine(dir, "crit");
        return null;
    }

    public static string Executable => Found
        ?? throw new Xunit.Sdk.XunitException("crit not found: install criu (apt-get install criu; .ci/run does this)");

    /// <summary>`crit ARGS`; its stdout. Fails the test with crit's stderr if it refuses.</summary>
    public static string Run(params string[] args)
    {
        var psi = new ProcessStartInfo(Executable) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stderr = p.StandardError.ReadToEndAsync();
        string stdout = p.StandardOutput.ReadToEnd();
        if (!p.WaitForExit(60_000))
        {
            p.Kill();
            Assert.Fail($"crit {string.Join(' ', args)} did not finish in 60 s");
        }
        p.WaitForExit();
        if (p.ExitCode != 0)
            Assert.Fail($"crit {string.Join(' ', args)} failed with exit code {p.ExitCode}: {stderr.Result}");
        return stdout;
    }

    /// <summary>`crit decode -i FILE --pretty`.</summary>
    public static string Decode(string file) => Run("decode", "-i", file, "--pretty");

    public static JsonElement DecodeJson(string file) => JsonDocument.Parse(Decode(file)).RootElement;

    public static JsonNode DecodeNode(string file) =>
        JsonNode.Parse(Decode(file)) ?? throw new InvalidOperationException($"crit printed nothing for {file}");

    /// <summary>Decodes every image in <paramref name="imagesDir"/> (raw pages-N.img have no decoder).</summary>
    public static Dictionary<string, JsonNode> DecodeAll(string imagesDir) =>
        Directory.GetFiles(imagesDir, "*.img")
            .Where(f => !System.IO.Path.GetFileName(f).StartsWith("pages-", StringComparison.Ordinal))
            .ToDictionary(f => System.IO.Path.GetFileName(f), DecodeNode);
}
