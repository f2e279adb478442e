using System.Diagnostics;
using Crisp.Checkpoint.Dump;
using Crisp.Checkpoint.Restore;
using Crisp.Native;
using Crisp.Native.ProcFs;
using Xunit;
using Xunit.Abstractions;
using static Crisp.TestSupport.TestProcesses;

namespace Crisp.Integration.Tests.Restore;

/// <summary>Interpreters and process trees: bash with a sleep child, python3; plus the 1 GiB timing.</summary>
public sealed class TreeRestoreTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = TempDir("tree");
    private readonly List<int> _pids = [];

    public void Dispose()
    {
        foreach (var pid in _pids)
            if (Directory.Exists($"/proc/{pid}"))
            {
                foreach (var c in Proc.Children(pid)) LibC.kill(c, LibC.SIGKILL);
                KillAndReap(pid);
            }
        try { Directory.Delete(_dir, true); } catch (IOException) { }
    }

    private int Spawn(string log, params string[] argv)
    {
        int pid = SpawnLogged(log, argv);
        _pids.Add(pid);
        return pid;
    }

    private static List<long> Ticks(string log) =>
        Lines(log).Where(l => l.StartsWith("tick ")).Select(l => long.Parse(l.Split(' ')[1])).ToList();

    private void DumpRestoreAndCheckTicks(int pid, string log, int interval)
    {
        WaitForLine(log, l => l == "tick 5");
        var children = Proc.Children(pid);
        string images = Path.Combine(_dir, "img");
        Dumper.Dump(new DumpOptions { Pid = pid, ImagesDir = images });
        unsafe { int st; LibC.waitpid(pid, &st, LibC.WNOHANG); }
        // The dump killed the tree; its other processes are reaped by whoever inherited them.
        var sw = Stopwatch.StartNew();
        while (children.Any(c => Directory.Exists($"/proc/{c}")) && sw.ElapsedMilliseconds < 3000) Thread.Sleep(5);
        var before = Ticks(log);
        var r = Restorer.Restore(new RestoreOptions { ImagesDir = images });
        output.WriteLine($"restore took {r.Elapsed.TotalMilliseconds:F1} ms, {r.Pids.Count} process(es)");
        Assert.Equal(pid, r.Pid);
        long last = before[^1];
        WaitForLine(log, l => l == $"tick {last + 5}", timeoutMs: 5000 + 10 * interval);
        var after = Ticks(log);
        // No gap and no repeat: the ticks are consecutive across the restore.
        for (int i = 1; i < after.Count; i++) Assert.Equal(after[i - 1] + 1, after[i]);
    }

    [Fact]
    public void Bash_loop_with_a_sleep_child_continues_without_gap_or_repeat()
    {
        string log = Path.Combine(_dir, "log");
        int pid = Spawn(log, "/bin/bash", "-c", "i=0; while :; do i=$((i+1)); echo \"tick $i\"; sleep 0.05; done");
        DumpRestoreAndCheckTicks(pid, log, 50);
    }

    [Fact]
    public void Python_loop_continues_without_gap_or_repeat()
    {
        string log = Path.Combine(_dir, "log");
        int pid = Spawn(log, "/usr/bin/python3", "-u", "-c", "import time\ni=0\nwhile True:\n    i+=1\n    print(f'tick {i}')\n    time.sleep(0.05)\n");
        DumpRestoreAndCheckTicks(pid, log, 50);
    }

    [Fact]
    public void Eager_restore_of_1_GiB_is_timed()
    {
        string memtouch = Gcc.Workload("memtouch");
        string log = Path.Combine(_dir, "log");
        // Images on tmpfs (/dev/shm), as the performance targets are measured.
        string images = Path.Combine("/dev/shm", $"crisp-1g-{Environment.ProcessId}");
        try
        {
            int pid = ProcessSpawner.Spawn(new SpawnOptions
            {
                Path = memtouch, Argv = [memtouch, "1024", log], Envp = [],
                Stdin = StdioSource.DevNull(false), Stdout = StdioSource.DevNull(true), Stderr = StdioSource.DevNull(true), NewSession = true,
            });
            _pids.Add(pid);
            WaitForLine(log, l => l.StartsWith("tick 3 "), timeoutMs: 30000);
            var d = Stopwatch.StartNew();
            Dumper.Dump(new DumpOptions { Pid = pid, ImagesDir = images });
            output.WriteLine($"dump 1 GiB: {d.Elapsed.TotalMilliseconds:F0} ms");
            unsafe { int st; LibC.waitpid(pid, &st, LibC.WNOHANG); }
            int n = Lines(log).Length;
            var sw = Stopwatch.StartNew();
            var r = Restorer.Restore(new RestoreOptions { ImagesDir = images });
            sw.Stop();
            foreach (var (step, took) in r.Steps) output.WriteLine($"  {step}: {took.TotalMilliseconds:F1} ms");
            output.WriteLine($"eager restore 1 GiB: {sw.Elapsed.TotalMilliseconds:F0} ms (inside Restore: {r.Elapsed.TotalMilliseconds:F0} ms)");
            LibC.kill(pid, LibC.SIGUSR1);
            Assert.StartsWith("check ok", WaitForLine(log, l => l.StartsWith("check "), skip: n, timeoutMs: 30000));
        }
        finally
        {
            if (Directory.Exists(images)) Directory.Delete(images, true);
        }
    }
}
