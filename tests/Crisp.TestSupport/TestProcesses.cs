using System.Diagnostics;
using Crisp.Native;

namespace Crisp.TestSupport;

/// <summary>Helpers for live-process tests (used with <c>using static</c>): temp dirs by name, spawn with a log, wait for log lines, kill exactly our pids.</summary>
public static class TestProcesses
{
    public static string TempDir(string name)
    {
        // At most 48 characters: unix socket paths made inside must fit sun_path (108 bytes).
        string leaf = $"crisp-{name}-{Environment.ProcessId}-{Guid.NewGuid():N}";
        string d = Path.Combine(Path.GetTempPath(), leaf[..Math.Min(leaf.Length, 48)]);
        Directory.CreateDirectory(d);
        return d;
    }

    /// <summary>Starts argv in its own session with stdout and stderr appended to <paramref name="log"/>.</summary>
    public static int SpawnLogged(string log, params string[] argv) => ProcessSpawner.Spawn(new SpawnOptions
    {
        Path = argv[0], Argv = argv, Envp = ["PATH=/usr/bin:/bin", "LANG=C"],
        Stdin = StdioSource.DevNull(false),
        Stdout = StdioSource.FromFile(log, LibC.O_WRONLY | LibC.O_CREAT | LibC.O_APPEND),
        Stderr = StdioSource.FromFile(log, LibC.O_WRONLY | LibC.O_CREAT | LibC.O_APPEND),
        NewSession = true,
    });

    public static string[] Lines(string path) => File.Exists(path) ? File.ReadAllLines(path) : [];

    /// <summary>Waits until a line of <paramref name="path"/> (after the first <paramref name="skip"/>) satisfies <paramref name="pred"/>.</summary>
    public static string WaitForLine(string path, Func<string, bool> pred, int skip = 0, int timeoutMs = 10000)
    {
        var sw = Stopwatch.StartNew();
        while (sw.ElapsedMilliseconds < timeoutMs)
        {
            var l = Lines(path).Skip(skip).FirstOrDefault(pred);
            if (l != null) return l;
            Thread.Sleep(10);
        }
        throw new TimeoutException($"no matching line in {path} after {timeoutMs} ms; last lines: {string.Join(" | ", Lines(path).TakeLast(5))}");
    }

    public static void KillAndReap(int pid)
    {
        LibC.kill(pid, LibC.SIGKILL);
        Reap(pid);
    }

    /// <summary>Waits for our child <paramref name="pid"/> to exit (a dump killed it) and reaps it.</summary>
    public static unsafe void Reap(int pid)
    {
        int status;
        LibC.waitpid(pid, &status, 0);
    }

    /// <summary>Reaps <paramref name="pid"/> if it is our child and has exited; never waits.</summary>
    public static unsafe void TryReap(int pid)
    {
        int status;
        LibC.waitpid(pid, &status, LibC.WNOHANG);
    }

    public static bool Alive(int pid) => Directory.Exists($"/proc/{pid}") && !File.ReadAllText($"/proc/{pid}/stat").Contains(") Z ");

    /// <summary>A file's text, or "" when it cannot be read (a /proc entry of a process that is gone, or not yet there).</summary>
    public static string ReadOrEmpty(string path)
    {
        try { return File.ReadAllText(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return ""; }
    }
}
