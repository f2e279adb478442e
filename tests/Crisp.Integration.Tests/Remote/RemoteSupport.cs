using System.Globalization;
using System.Text.RegularExpressions;
using Crisp.Integration.Tests.Support;
using Crisp.Native;
using Crisp.Native.Tests.Support;

namespace Crisp.Integration.Tests.Remote;

/// <summary>A crisp command running in the background (a server): its pid, its output files; Dispose kills exactly it.</summary>
public sealed class BackgroundCrisp : IDisposable
{
    public int Pid { get; }
    public string Stdout { get; }
    public string Stderr { get; }
    private bool _reaped;

    public BackgroundCrisp(TempDir dir, string name, params string[] args)
    {
        Stdout = dir[$"{name}.out"];
        Stderr = dir[$"{name}.err"];
        Pid = CrispCli.Start(dir, Stdout, Stderr, args);
    }

    public string Output => $"stdout: {Poll.ReadFile(Stdout)}\nstderr: {Poll.ReadFile(Stderr)}";

    /// <summary>Waits for a line matching <paramref name="pattern"/> in stdout or stderr; returns its first group.</summary>
    public string WaitFor(string pattern, int timeoutMs = 60_000)
    {
        var re = new Regex(pattern);
        string? value = null;
        if (!Poll.Until(() =>
            {
                var m = re.Match(Poll.ReadFile(Stdout) + "\n" + Poll.ReadFile(Stderr));
                if (m.Success) value = m.Groups.Count > 1 ? m.Groups[1].Value : m.Value;
                return m.Success || Exited;
            }, timeoutMs) || value is null)
            throw new TimeoutException($"no /{pattern}/ from crisp {Pid}:\n{Output}");
        return value;
    }

    /// <summary>The port a server printed as "listening on ADDR:PORT".</summary>
    public int Port(string what = "listening on") =>
        int.Parse(WaitFor(what + @" \S*:(\d+)"), CultureInfo.InvariantCulture);

    private int? _status;
    public bool Exited
    {
        get
        {
            if (_status is not null) return true;
            int s = ProcessSpawner.Wait(Pid, LibC.WNOHANG);
            if (s >= 0) { _status = s; _reaped = true; }
            return _status is not null;
        }
    }

    /// <summary>Waits for the exit; returns the exit code (128+signal if killed).</summary>
    public int WaitExit(TimeSpan timeout)
    {
        if (!Poll.Until(() => Exited, (int)timeout.TotalMilliseconds))
            throw new TimeoutException($"crisp {Pid} still running after {timeout.TotalSeconds} s:\n{Output}");
        int s = _status!.Value;
        return LibC.WIFEXITED(s) ? LibC.WEXITSTATUS(s) : 128 + LibC.WTERMSIG(s);
    }

    public void Terminate(int signal = LibC.SIGTERM)
    {
        if (!Exited) LibC.kill(Pid, signal);
    }

    public void Dispose()
    {
        if (_reaped || Exited) return;
        LibC.kill(Pid, LibC.SIGKILL);
        ProcessSpawner.Wait(Pid);
    }
}

internal static class RemoteUtil
{
    public static string S(int v) => v.ToString(CultureInfo.InvariantCulture);

    public static bool Gone(int pid) =>
        !File.Exists($"/proc/{pid}/stat") || Poll.ReadFile($"/proc/{pid}/stat").Contains(") Z ");
}
