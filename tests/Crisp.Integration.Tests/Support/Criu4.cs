using System.Diagnostics;
using System.Globalization;
using Crisp.TestSupport;
using Xunit;

namespace Crisp.Integration.Tests.Support;

/// <summary>
/// CRIU 4.2 (`criu4`, built by ../shared/criu/build.sh), the peer crisp must interoperate with.
/// Tests marked <see cref="Criu4FactAttribute"/> are skipped, visibly and with the reason, where it is not on PATH.
/// </summary>
public static class Criu4
{
    public static readonly string? Path = Find();

    private static string? Find()
    {
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':').Append("/usr/local/bin"))
        {
            if (dir.Length == 0) continue;
            string p = System.IO.Path.Combine(dir, "criu4");
            if (File.Exists(p)) return p;
        }
        return null;
    }

    /// <summary>Runs criu4 with <paramref name="args"/> to its end; (exit code, stdout+stderr).</summary>
    public static (int Code, string Output) Run(TimeSpan timeout, params string[] args)
    {
        var psi = new ProcessStartInfo(Path ?? throw new InvalidOperationException("criu4 is not on PATH"), args)
        {
            RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true,
        };
        using var p = Process.Start(psi)!;
        p.StandardInput.Close();
        var err = p.StandardError.ReadToEndAsync();
        var @out = p.StandardOutput.ReadToEndAsync();
        if (!p.WaitForExit(timeout))
        {
            p.Kill(true);
            p.WaitForExit();
            throw new TimeoutException($"criu4 {string.Join(' ', args)} did not finish within {timeout.TotalSeconds} s");
        }
        return (p.ExitCode, @out.Result + err.Result);
    }

    /// <summary>CRIU's error lines in a log, without the RLIMIT_NOFILE line it prints on every run here.</summary>
    public static string Errors(string log) => File.Exists(log)
        ? string.Join("\n", File.ReadLines(log).Where(l => l.Contains("Error") && !l.Contains("RLIMIT_NOFILE")).Take(8))
        : $"(no log at {log})";

    /// <summary>
    /// CRIU's lazy page transfer makes pipes of 4 MiB, above this machine's fs.pipe-max-size, and
    /// root here lacks CAP_SYS_RESOURCE: raise the limit for the test, put the old value back after.
    /// </summary>
    public sealed class PipeMaxSize : IDisposable
    {
        private const string Knob = "/proc/sys/fs/pipe-max-size";
        private const long Needed = 4 << 20;
        private readonly string? _old;

        public PipeMaxSize()
        {
            string old = File.ReadAllText(Knob).Trim();
            if (long.Parse(old, CultureInfo.InvariantCulture) >= Needed) return;
            File.WriteAllText(Knob, Needed.ToString(CultureInfo.InvariantCulture));
            _old = old;
        }

        public void Dispose()
        {
            if (_old is not null) File.WriteAllText(Knob, _old);
        }
    }

    /// <summary>Starts criu4 in the background (a page server); the caller kills or waits.</summary>
    public static Process Start(params string[] args)
    {
        var psi = new ProcessStartInfo(Path ?? throw new InvalidOperationException("criu4 is not on PATH"), args)
        {
            RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true,
        };
        return Process.Start(psi)!;
    }
}

/// <summary>A fact that needs CRIU 4.2: skipped with the reason where `criu4` is not on PATH.</summary>
public sealed class Criu4FactAttribute : FactAttribute
{
    public Criu4FactAttribute()
    {
        if (Criu4.Path == null) Skip = "criu4 is not on PATH: run ../shared/criu/build.sh (CRIU 4.2) to run the interop tests";
    }
}
