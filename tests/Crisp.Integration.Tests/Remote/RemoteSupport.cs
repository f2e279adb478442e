using System.Globalization;
using System.Text.RegularExpressions;
using Crisp.Integration.Tests.Support;
using Crisp.Native;
using Crisp.TestSupport;

namespace Crisp.Integration.Tests.Remote;

/// <summary>A crisp command running in the background (a server): its pid, its output files; Dispose kills exactly it.</summary>
public sealed class BackgroundCrisp : IDisposable
{
    public int Pid { get; }
    public string Stdout { get; }
    public string Stderr { get; }
    private bool _reaped;

    public BackgroundCrisp(TempDir dir, string name, params string[] args) : this(dir, name, [], args) { }

    /// <summary>Runs `PREFIX... dotnet crisp.dll ARGS` (e.g. PREFIX = unshare for a new pid namespace, ip netns exec).</summary>
    public BackgroundCrisp(TempDir dir, string name, string[] prefix, string[] args)
    {
        Stdout = dir[$"{name}.out"];
        Stderr = dir[$"{name}.err"];
        Pid = CrispCli.Start(Stdout, Stderr, args, prefix: prefix);
    }

    /// <summary>A new pid namespace with its own /proc, crisp as its init (so a restore may take a pid the source still holds).</summary>
    public static readonly string[] InNewPidNs = ["/usr/bin/unshare", "--pid", "--fork", "--mount-proc", "--kill-child"];

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

    /// <summary>
    /// The pid, as this test sees it, of the process that is <paramref name="innerPid"/> inside a
    /// child pid namespace (NSpid in /proc/PID/status lists it outermost first); 0 if none yet.
    /// </summary>
    public static int OuterPid(int innerPid)
    {
        foreach (var d in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(d), out int pid) || pid == innerPid) continue;
            string status;
            try { status = File.ReadAllText(Path.Combine(d, "status")); } catch (IOException) { continue; } catch (UnauthorizedAccessException) { continue; }
            var line = status.Split('\n').FirstOrDefault(l => l.StartsWith("NSpid:", StringComparison.Ordinal));
            if (line is null) continue;
            var ids = line["NSpid:".Length..].Split('\t', StringSplitOptions.RemoveEmptyEntries);
            if (ids.Length >= 2 && ids[^1] == S(innerPid) && status.Contains("State:\tS") | status.Contains("State:\tR") | status.Contains("State:\tD"))
                return pid;
        }
        return 0;
    }

    /// <param name="pidFile">the restore's --pidfile: written once the process really runs. Until then the
    /// task exists but is still being morphed, and a signal sent to it would arrive mid-restore.</param>
    public static int WaitOuterPid(int innerPid, BackgroundCrisp restore, string? pidFile = null, int timeoutMs = 30_000)
    {
        if (pidFile is not null && !Poll.Until(() => File.Exists(pidFile) || restore.Exited, timeoutMs))
            throw new TimeoutException($"the restore never wrote {pidFile}:\n{restore.Output}");
        int found = 0;
        if (!Poll.Until(() => (found = OuterPid(innerPid)) != 0 || restore.Exited, timeoutMs) || found == 0)
            throw new TimeoutException($"no process {innerPid} appeared in the restore's pid namespace (restore exited: {restore.Exited}, pidfile: {(pidFile is null ? "-" : Poll.ReadFile(pidFile))}):\n{restore.Output}");
        return found;
    }

    public static void CopyImages(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (var f in Directory.GetFiles(from, "*.img"))
            File.Copy(f, Path.Combine(to, Path.GetFileName(f)));
        // a lazy dump's session id: the destination's daemon says hello with it (and may reconnect)
        string session = Path.Combine(from, Crisp.PageServer.Protocol.CrispHello.FileName);
        if (File.Exists(session)) File.Copy(session, Path.Combine(to, Path.GetFileName(session)));
    }

    public static bool Gone(int pid) =>
        !File.Exists($"/proc/{pid}/stat") || Poll.ReadFile($"/proc/{pid}/stat").Contains(") Z ");
}
