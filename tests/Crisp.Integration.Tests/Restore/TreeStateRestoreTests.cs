using System.Diagnostics;
using System.Text.RegularExpressions;
using Crisp.Checkpoint.Dump;
using Crisp.Checkpoint.Restore;
using Crisp.Native;
using Crisp.Native.ProcFs;
using Xunit;
using Xunit.Abstractions;
using static Crisp.Integration.Tests.Restore.RestoreTestUtil;

namespace Crisp.Integration.Tests.Restore;

/// <summary>
/// What a process tree shares and what state its members are in: open file descriptions and
/// pipes shared between parent and child, zombies, stopped processes, and files that come from
/// outside (--inherit-fd, -j).
/// </summary>
public sealed partial class TreeStateRestoreTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = TempDir("treestate");
    private readonly List<int> _pids = [];

    public void Dispose()
    {
        // Children first, so a parent killed later cannot leave them to be reparented unseen.
        foreach (var pid in Enumerable.Reverse(_pids))
            if (Directory.Exists($"/proc/{pid}")) KillAndReap(pid);
        try { Directory.Delete(_dir, true); } catch (IOException) { }
    }

    private string Compile(string workload)
    {
        string bin = Path.Combine(_dir, workload);
        Gcc(Path.Combine(RepoRoot, "tests/workloads", workload + ".c"), bin);
        return bin;
    }

    private int Track(int pid)
    {
        _pids.Add(pid);
        return pid;
    }

    /// <summary>Dumps the tree of <paramref name="pid"/> (killing it), reaps the root, waits for the other pids to be gone.</summary>
    private unsafe string DumpTree(int pid, IEnumerable<int> others)
    {
        string images = Path.Combine(_dir, "img");
        Dumper.Dump(new DumpOptions { Pid = pid, ImagesDir = images });
        int st;
        LibC.waitpid(pid, &st, 0);
        var sw = Stopwatch.StartNew();
        while (others.Any(c => Directory.Exists($"/proc/{c}")) && sw.ElapsedMilliseconds < 3000) Thread.Sleep(5);
        return images;
    }

    private RestoredProcess Restore(RestoreOptions o)
    {
        var r = Restorer.Restore(o);
        foreach (var p in r.Pids) if (!_pids.Contains(p)) _pids.Add(p);
        output.WriteLine($"restored {string.Join(", ", r.Pids)} in {r.Elapsed.TotalMilliseconds:F1} ms");
        return r;
    }

    private static long Kcmp(int pid1, int fd1, int pid2, int fd2) =>
        LibC.Syscall(LibC.SYS_kcmp, pid1, pid2, LibC.KCMP_FILE, fd1, fd2);

    private static string FdInfoField(int pid, int fd, string field) =>
        File.ReadAllLines($"/proc/{pid}/fdinfo/{fd}").First(l => l.StartsWith(field + ":")).Split(':', 2)[1].Trim();

    private static char State(int pid)
    {
        string s = File.ReadAllText($"/proc/{pid}/stat");
        return s[s.LastIndexOf(')') + 2];
    }

    // ---- files and pipes shared between processes -----------------------------------------------

    [GeneratedRegex(@"^[cp] \d+$")]
    private static partial Regex SharedFileLine();

    [Fact]
    public void A_pipe_and_a_file_offset_shared_by_parent_and_child_stay_shared()
    {
        string bin = Compile("sharedfds");
        string log = Path.Combine(_dir, "log"), shared = Path.Combine(_dir, "shared");
        int pid = Track(SpawnLogged(log, bin, shared));
        int child = Track(int.Parse(WaitForLine(log, l => l.StartsWith("child "))["child ".Length..]));
        WaitForLine(log, l => l == "got 5");
        string images = DumpTree(pid, [child]);

        int before = Lines(log).Length;
        long last = Lines(log).Where(l => l.StartsWith("got ")).Select(l => long.Parse(l[4..])).Last();
        var r = Restore(new RestoreOptions { ImagesDir = images });
        Assert.Equal([pid, child], r.Pids);
        // The child writes into the pipe, the parent reads: numbers keep coming, none lost or repeated.
        WaitForLine(log, l => l == $"got {last + 20}", skip: before);
        var got = Lines(log).Where(l => l.StartsWith("got ")).Select(l => long.Parse(l[4..])).ToList();
        for (int i = 1; i < got.Count; i++) Assert.Equal(got[i - 1] + 1, got[i]);
        Assert.DoesNotContain("eof", Lines(log));

        // Parent: 3 = read end, 5 = the file; child: 4 = write end, 5 = the file; both: 1 = the log.
        Assert.Equal(FdInfoField(pid, 3, "ino"), FdInfoField(child, 4, "ino"));
        Assert.Equal(FdInfoField(pid, 5, "ino"), FdInfoField(child, 5, "ino"));
        Assert.Equal(0, Kcmp(pid, 5, child, 5));
        Assert.Equal(0, Kcmp(pid, 1, child, 1));
        Assert.Equal(0, Kcmp(pid, 2, child, 2));
        Assert.NotEqual(0, Kcmp(pid, 1, child, 2)); // stdout and stderr were opened separately

        // One offset: with two descriptions the writes after the restore would overwrite each other.
        LibC.kill(child, LibC.SIGSTOP);
        LibC.kill(pid, LibC.SIGSTOP);
        Thread.Sleep(50);
        var lines = File.ReadAllLines(shared);
        Assert.All(lines, l => Assert.Matches(SharedFileLine(), l));
        foreach (char who in "cp")
        {
            var n = lines.Where(l => l[0] == who).Select(l => long.Parse(l[2..])).ToList();
            Assert.True(n.Count > last + 10, $"only {n.Count} '{who}' lines");
            Assert.Equal(Enumerable.Range(1, n.Count).Select(i => (long)i), n);
        }
        Assert.Equal(new FileInfo(shared).Length, long.Parse(FdInfoField(pid, 5, "pos")));
    }

    // ---- zombies ----------------------------------------------------------------------------------

    [Theory]
    [InlineData("exit", "exited 7")]
    [InlineData("signal", "signal 15")]
    public void An_unreaped_zombie_child_is_restored_and_its_parent_reaps_it_with_the_same_status(string how, string expected)
    {
        string bin = Compile("zombie");
        string log = Path.Combine(_dir, "log");
        int pid = Track(SpawnLogged(log, bin, how));
        int child = Track(int.Parse(WaitForLine(log, l => l.StartsWith("child "))["child ".Length..]));
        WaitForLine(log, l => l == "tick 5");
        Assert.Equal('Z', State(child));
        string images = DumpTree(pid, [child]);
        Assert.False(Directory.Exists($"/proc/{child}"));

        int before = Lines(log).Length;
        var r = Restore(new RestoreOptions { ImagesDir = images });
        Assert.Equal([pid], r.Pids);
        Assert.Equal('Z', State(child));
        Assert.Equal(pid, Proc.Stat(child).PPid);
        long last = Lines(log).Where(l => l.StartsWith("tick ")).Select(l => long.Parse(l[5..])).Last();
        WaitForLine(log, l => l == $"tick {last + 3}", skip: before);
        Assert.Equal('Z', State(child));

        LibC.kill(pid, LibC.SIGUSR1);
        string reaped = WaitForLine(log, l => l.StartsWith("reaped ") || l.StartsWith("waitpid "), skip: before);
        Assert.Equal($"reaped {child} {expected}", reaped);
        Assert.Equal(0, ProcessSpawner.Wait(pid) >> 8);
        Assert.False(Directory.Exists($"/proc/{child}"));
    }

    // ---- stopped processes ------------------------------------------------------------------------

    private static List<long> Ticks(string log) =>
        Lines(log).Where(l => l.StartsWith("tick ")).Select(l => long.Parse(l[5..])).ToList();

    [Fact]
    public void A_process_dumped_stopped_is_restored_stopped_and_continues_on_SIGCONT()
    {
        string log = Path.Combine(_dir, "log");
        int pid = Track(SpawnLogged(log, "/usr/bin/python3", "-u", "-c",
            "import time\ni=0\nwhile True:\n    i+=1\n    print(f'tick {i}')\n    time.sleep(0.02)\n"));
        WaitForLine(log, l => l == "tick 5");
        LibC.kill(pid, LibC.SIGSTOP);
        var sw = Stopwatch.StartNew();
        while (State(pid) != 'T' && sw.ElapsedMilliseconds < 3000) Thread.Sleep(5);
        Assert.Equal('T', State(pid));
        string images = DumpTree(pid, []);

        int before = Ticks(log).Count;
        var r = Restore(new RestoreOptions { ImagesDir = images });
        Assert.Equal(pid, r.Pid);
        sw.Restart();
        while (State(pid) != 'T' && sw.ElapsedMilliseconds < 3000) Thread.Sleep(5);
        Assert.Equal('T', State(pid));
        Thread.Sleep(300);
        Assert.Equal('T', State(pid));
        Assert.Equal(before, Ticks(log).Count); // not a single step of its own while stopped

        LibC.kill(pid, LibC.SIGCONT);
        WaitForLine(log, l => l == $"tick {before + 10}");
        Assert.NotEqual('T', State(pid));
        var ticks = Ticks(log);
        for (int i = 1; i < ticks.Count; i++) Assert.Equal(ticks[i - 1] + 1, ticks[i]);
    }
}
