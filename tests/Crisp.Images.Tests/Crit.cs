using System.Diagnostics;
using System.Text.Json;
using Xunit;

namespace Crisp.Images.Tests;

/// <summary>
/// Runs CRIU's crit, the judge of whether an image is well-formed. Missing crit
/// is a failure, never a skip: the compatibility promise cannot be checked without it.
/// </summary>
internal static class Crit
{
    private static readonly string? Executable = Find();

    private static string? Find()
    {
        if (File.Exists("/usr/bin/crit"))
            return "/usr/bin/crit";
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':'))
            if (dir.Length > 0 && File.Exists(Path.Combine(dir, "crit")))
                return Path.Combine(dir, "crit");
        return null;
    }

    public static string Path_ => Executable
        ?? throw new Xunit.Sdk.XunitException("crit not found: install criu (apt-get install criu) to run the image compatibility tests");

    /// <summary>`crit decode -i FILE --pretty`; fails the test with crit's stderr if it refuses the file.</summary>
    public static string Decode(string file) => Run("decode", "-i", file, "--pretty");

    public static JsonElement DecodeJson(string file) => JsonDocument.Parse(Decode(file)).RootElement;

    public static string Run(params string[] args)
    {
        var psi = new ProcessStartInfo(Path_)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var a in args)
            psi.ArgumentList.Add(a);
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
}

internal static class Json
{
    /// <summary>crit shows some integers as "0x..." strings, some as numbers.</summary>
    public static ulong U64(this JsonElement e) => e.ValueKind switch
    {
        JsonValueKind.Number => e.GetUInt64(),
        JsonValueKind.String when e.GetString()!.StartsWith("0x") => Convert.ToUInt64(e.GetString()![2..], 16),
        JsonValueKind.String => ulong.Parse(e.GetString()!),
        _ => throw new FormatException($"not a number: {e}"),
    };

    public static JsonElement Entries(this JsonElement root) => root.GetProperty("entries");
    public static JsonElement At(this JsonElement e, string name) => e.GetProperty(name);
    public static ulong U64(this JsonElement e, string name) => e.GetProperty(name).U64();
    public static string Str(this JsonElement e, string name) => e.GetProperty(name).GetString()!;
}

/// <summary>A temp directory removed at dispose.</summary>
internal sealed class TempDir : IDisposable
{
    public TempDir(string? root = null)
    {
        Path = System.IO.Path.Combine(root ?? System.IO.Path.GetTempPath(), "crisp-images-" + Guid.NewGuid().ToString("N")[..12]);
        Directory.CreateDirectory(Path);
    }

    public string Path { get; }
    public string File(string name) => System.IO.Path.Combine(Path, name);
    public void Dispose() => Directory.Delete(Path, recursive: true);
}
