using System.Diagnostics;
using Crisp.Checkpoint.Dump;
using Crisp.Checkpoint.Restore;
using Crisp.Images;
using Crisp.Native;
using Crisp.Native.ProcFs;
using Xunit;
using Xunit.Abstractions;
using static Crisp.TestSupport.TestProcesses;

namespace Crisp.Integration.Tests.Restore;

/// <summary>crisp dump, then crisp restore, on real processes.</summary>
public sealed class DumpRestoreTests : IDisposable
{
    private readonly ITestOutputHelper _out;
    private readonly string _dir;
    private readonly string _memtouch;
    private readonly List<int> _pids = [];

    public DumpRestoreTests(ITestOutputHelper output)
    {
        _out = output;
        _dir = TempDir("restore");
        _memtouch = Gcc.Workload("memtouch");
    }

    public void Dispose()
    {
        foreach (var pid in _pids) if (Directory.Exists($"/proc/{pid}")) KillAndReap(pid);
        try { Directory.Delete(_dir, true); } catch (IOException) { }
    }

    private int Spawn(string path, params string[] argv)
    {
        int pid = ProcessSpawner.Spawn(new SpawnOptions
        {
            Path = path, Argv = [path, .. argv], Envp = ["PATH=/usr/bin:/bin", "LANG=C"],
            Stdin = StdioSource.DevNull(false), Stdout = StdioSource.DevNull(true), Stderr = StdioSource.DevNull(true),
            NewSession = true,
        });
        _pids.Add(pid);
        return pid;
    }

    private unsafe void DumpAndReap(int pid, string images)
    {
        Dumper.Dump(new DumpOptions { Pid = pid, ImagesDir = images });
        int st;
        LibC.waitpid(pid, &st, 0); // the dump killed it; free the pid for the restore
    }

    private RestoredProcess Restore(string images)
    {
        var r = Restorer.Restore(new RestoreOptions { ImagesDir = images });
        _pids.Add(r.Pid);
        return r;
    }

    /// <summary>memtouch with MIB MiB, dumped after tick N: its pid, last tick and log length at the dump.</summary>
    private (int Pid, long LastTick, int Lines) DumpMemtouch(string mib, int tick, string log, string images)
    {
        int pid = Spawn(_memtouch, mib, log);
        WaitForLine(log, l => l.StartsWith($"tick {tick} "));
        DumpAndReap(pid, images);
        return (pid, LastTick(log), Lines(log).Length);
    }

    private static long LastTick(string log) =>
        Lines(log).Where(l => l.StartsWith("tick ")).Select(l => long.Parse(l.Split(' ')[1])).DefaultIfEmpty(0).Last();

    private static string MapsLayout(IEnumerable<(ulong Start, ulong End, int Prot)> v) =>
        string.Join("\n", v.Select(x => $"{x.Start:x}-{x.End:x} {x.Prot}"));

    private void AssertMapsEqualDump(int pid, string images)
    {
        var mm = new ImageDir(images).ReadMm(pid);
        var dumped = mm.Vmas.Select(v => (v.Start, v.End, (int)v.Prot));
        var now = Proc.Maps(pid).Select(v => (v.Start, v.End, v.Prot));
        Assert.Equal(MapsLayout(dumped), MapsLayout(now));
    }

    [Fact]
    public void Single_threaded_memtouch_continues_with_its_memory_and_counter()
    {
        string log = Path.Combine(_dir, "log"), images = Path.Combine(_dir, "img");
        var (pid, before, linesBefore) = DumpMemtouch("16", 5, log, images);

        var r = Restore(images);
        Assert.Equal(pid, r.Pid);
        _out.WriteLine($"restore took {r.Elapsed.TotalMilliseconds:F1} ms");
        var next = WaitForLine(log, l => l.StartsWith("tick "), skip: linesBefore);
        Assert.Equal(before + 1, long.Parse(next.Split(' ')[1]));
        AssertMapsEqualDump(pid, images);
        LibC.kill(pid, LibC.SIGUSR1);
        Assert.StartsWith("check ok", WaitForLine(log, l => l.StartsWith("check "), skip: linesBefore));
        Assert.Equal("memtouch", File.ReadAllText($"/proc/{pid}/comm").Trim());
        Assert.Equal(_memtouch, LibC.ReadLink($"/proc/{pid}/exe"));
        // Not detached: crisp (here the test) is the parent and gets the exit status.
        LibC.kill(pid, LibC.SIGUSR2);
        Assert.Equal(0, r.WaitForExit());
        _pids.Remove(pid);
    }

    [Fact]
    public void Huge_pages_restore_moves_whole_blocks_in_with_the_same_contents_and_layout()
    {
        string log = Path.Combine(_dir, "log"), images = Path.Combine(_dir, "img");
        var (pid, before, linesBefore) = DumpMemtouch("64", 3, log, images);

        var r = Restorer.Restore(new RestoreOptions { ImagesDir = images, HugePages = true });
        _pids.Add(r.Pid);
        var next = WaitForLine(log, l => l.StartsWith("tick "), skip: linesBefore);
        Assert.Equal(before + 1, long.Parse(next.Split(' ')[1]));
        // The staging area is gone and the moved blocks did not split or merge any VMA.
        AssertMapsEqualDump(pid, images);
        LibC.kill(pid, LibC.SIGUSR1);
        Assert.StartsWith("check ok", WaitForLine(log, l => l.StartsWith("check "), skip: linesBefore));
        long hugeKb = long.Parse(File.ReadAllLines($"/proc/{pid}/smaps_rollup").First(l => l.StartsWith("AnonHugePages:"))
            .Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]);
        _out.WriteLine($"AnonHugePages after restore: {hugeKb} kB; restore took {r.Elapsed.TotalMilliseconds:F1} ms");
        if (!File.ReadAllText("/sys/kernel/mm/transparent_hugepage/enabled").Contains("[never]"))
            Assert.True(hugeKb >= 30 * 2048, $"expected at least 30 huge pages in 64 MiB, got {hugeKb} kB");
        Assert.DoesNotContain(Directory.GetFiles($"/proc/{pid}/fd").Select(f => LibC.ReadLink(f)), t => t.Contains("userfaultfd"));
    }

    [Fact]
    public void A_signal_before_the_restored_thread_runs_interrupts_its_pause_as_the_kernel_would()
    {
        // pauseloop waits in pause() for SIGUSR1. Dumped stopped, it comes back stopped before
        // running any code; SIGUSR1 then SIGCONT: the kernel makes pause() return EINTR after
        // the handler and the loop ends. A thread left on the syscall instruction would run the
        // handler first and then enter pause() again, forever.
        string exe = Gcc.Workload("pauseloop"), log = Path.Combine(_dir, "log"), images = Path.Combine(_dir, "img");
        int pid = Spawn(exe, log);
        WaitForLine(log, l => l == "ready");
        Thread.Sleep(20); // inside pause()
        LibC.kill(pid, LibC.SIGSTOP);
        for (int i = 0; i < 200 && Proc.Stat(pid).State != 'T'; i++) Thread.Sleep(10);
        DumpAndReap(pid, images);
        var r = Restore(images);
        for (int i = 0; i < 200 && Proc.Stat(pid).State != 'T'; i++) Thread.Sleep(10);
        Assert.Equal('T', Proc.Stat(pid).State);
        LibC.kill(pid, LibC.SIGUSR1);
        LibC.kill(pid, LibC.SIGCONT);
        Assert.Equal("got", WaitForLine(log, l => l == "got", timeoutMs: 5000));
        Assert.Equal(0, r.WaitForExit());
        _pids.Remove(pid);
    }

    [Fact]
    public void Multi_threaded_memtouch_restores_every_thread()
    {
        string log = Path.Combine(_dir, "log"), images = Path.Combine(_dir, "img");
        int pid = Spawn(_memtouch, "4", log, "3");
        WaitForLine(log, l => l.StartsWith("tick 5 "));
        var tids = Proc.Tasks(pid);
        Assert.Equal(4, tids.Count);
        DumpAndReap(pid, images);
        int linesBefore = Lines(log).Length;
        var lastLine = Lines(log).Last(l => l.StartsWith("tick "));

        var r = Restore(images);
        Assert.Equal(tids.OrderBy(t => t), Proc.Tasks(pid).OrderBy(t => t));
        WaitForLine(log, l => l.StartsWith("tick "), skip: linesBefore + 5);
        // Each worker's counter goes on from where it was.
        var after = Lines(log).Skip(linesBefore).Last(l => l.StartsWith("tick "));
        var c0 = lastLine.Split(' ').Skip(3).Select(x => long.Parse(x.Split('=')[1])).ToList();
        var c1 = after.Split(' ').Skip(3).Select(x => long.Parse(x.Split('=')[1])).ToList();
        Assert.Equal(3, c1.Count);
        for (int i = 0; i < 3; i++) Assert.True(c1[i] > c0[i], $"thread {i + 1}: {c0[i]} → {c1[i]}");
        LibC.kill(pid, LibC.SIGUSR1);
        Assert.StartsWith("check ok", WaitForLine(log, l => l.StartsWith("check "), skip: linesBefore));
        AssertMapsEqualDump(pid, images);
    }

    [Fact]
    public void Restored_process_dumps_and_restores_again()
    {
        string log = Path.Combine(_dir, "log");
        int pid = Spawn(_memtouch, "8", log, "1");
        WaitForLine(log, l => l.StartsWith("tick 3 "));
        DumpAndReap(pid, Path.Combine(_dir, "img1"));
        var r = Restore(Path.Combine(_dir, "img1"));
        int n = Lines(log).Length;
        WaitForLine(log, l => l.StartsWith("tick "), skip: n + 2);
        Dumper.Dump(new DumpOptions { Pid = pid, ImagesDir = Path.Combine(_dir, "img2") });
        // The dump killed it and, as its tracer in this same process, already reaped it.
        Assert.False(Directory.Exists($"/proc/{pid}"));
        long before = LastTick(log);
        n = Lines(log).Length;
        var r2 = Restore(Path.Combine(_dir, "img2"));
        var next = WaitForLine(log, l => l.StartsWith("tick "), skip: n);
        Assert.Equal(before + 1, long.Parse(next.Split(' ')[1]));
        LibC.kill(pid, LibC.SIGUSR1);
        Assert.StartsWith("check ok", WaitForLine(log, l => l.StartsWith("check "), skip: n));
        AssertMapsEqualDump(pid, Path.Combine(_dir, "img2"));
    }

    [Fact]
    public void Pid_in_use_gives_a_clear_error_and_leaves_nothing()
    {
        string log = Path.Combine(_dir, "log"), images = Path.Combine(_dir, "img");
        int pid = Spawn(_memtouch, "1", log);
        WaitForLine(log, l => l.StartsWith("tick 2 "));
        Dumper.Dump(new DumpOptions { Pid = pid, ImagesDir = images, LeaveRunning = true });
        var children = Proc.Children(Environment.ProcessId).ToHashSet();
        var e = Assert.Throws<CrispException>(() => Restorer.Restore(new RestoreOptions { ImagesDir = images }));
        Assert.Contains($"pid {pid} is in use by another process (memtouch)", e.Message);
        Assert.True(Proc.Children(Environment.ProcessId).ToHashSet().SetEquals(children));
    }

    [Fact]
    public void Missing_file_gives_a_clear_error_and_leaves_nothing()
    {
        string log = Path.Combine(_dir, "log"), images = Path.Combine(_dir, "img");
        string copy = Path.Combine(_dir, "memtouch-copy");
        File.Copy(_memtouch, copy);
        File.SetUnixFileMode(copy, (UnixFileMode)0b111_101_101);
        int pid = Spawn(copy, "1", log);
        WaitForLine(log, l => l.StartsWith("tick 2 "));
        DumpAndReap(pid, images);
        File.Delete(copy);
        var children = Proc.Children(Environment.ProcessId).ToHashSet();
        var e = Assert.Throws<CrispException>(() => Restorer.Restore(new RestoreOptions { ImagesDir = images }));
        _out.WriteLine(e.Message);
        Assert.Contains($"file {copy} is gone", e.Message);
        Assert.False(Directory.Exists($"/proc/{pid}"));
        Assert.True(Proc.Children(Environment.ProcessId).ToHashSet().SetEquals(children));
    }

    [Fact]
    public void Corrupted_image_gives_a_clear_error_and_leaves_nothing()
    {
        string log = Path.Combine(_dir, "log"), images = Path.Combine(_dir, "img");
        int pid = Spawn(_memtouch, "4", log);
        WaitForLine(log, l => l.StartsWith("tick 2 "));
        DumpAndReap(pid, images);
        string pages = Directory.GetFiles(images, "pages-*.img").Single();
        using (var f = File.OpenWrite(pages)) f.SetLength(f.Length / 2);
        var children = Proc.Children(Environment.ProcessId).ToHashSet();
        var e = Assert.Throws<CrispException>(() => Restorer.Restore(new RestoreOptions { ImagesDir = images }));
        _out.WriteLine(e.Message);
        Assert.Contains("truncated", e.Message);
        Assert.False(Directory.Exists($"/proc/{pid}"));
        Assert.True(Proc.Children(Environment.ProcessId).ToHashSet().SetEquals(children));
    }
}
