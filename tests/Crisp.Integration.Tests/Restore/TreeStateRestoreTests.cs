using System.Diagnostics;
using System.Text.RegularExpressions;
using Crisp.Checkpoint.Dump;
using Crisp.Checkpoint.Restore;
using Crisp.Native;
using Crisp.Native.ProcFs;
using Crisp.Integration.Tests.Support;
using Xunit;
using Xunit.Abstractions;
using static Crisp.TestSupport.TestProcesses;

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
        string bin = Gcc.Workload(workload);
        return bin;
    }

    private int Track(int pid)
    {
        _pids.Add(pid);
        return pid;
    }

    /// <summary>The pid was reaped: it may belong to someone else from now on.</summary>
    private void Untrack(int pid) => _pids.RemoveAll(p => p == pid);

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

    [Fact]
    public void A_tree_whose_shared_file_is_gone_fails_naming_the_step_and_leaves_no_process()
    {
        string bin = Compile("sharedfds");
        string log = Path.Combine(_dir, "log"), shared = Path.Combine(_dir, "shared");
        int pid = Track(SpawnLogged(log, bin, shared));
        int child = Track(int.Parse(WaitForLine(log, l => l.StartsWith("child "))["child ".Length..]));
        WaitForLine(log, l => l == "got 3");
        string images = DumpTree(pid, [child]);
        File.Delete(shared);

        var e = Assert.Throws<CrispException>(() => Restore(new RestoreOptions { ImagesDir = images }));
        output.WriteLine(e.Message);
        Assert.StartsWith($"restore failed at step 'process {pid}: files'", e.Message);
        Assert.Contains(shared, e.Message);
        var sw = Stopwatch.StartNew();
        while ((Directory.Exists($"/proc/{pid}") || Directory.Exists($"/proc/{child}")) && sw.ElapsedMilliseconds < 3000) Thread.Sleep(5);
        Assert.False(Directory.Exists($"/proc/{pid}"), $"process {pid} is left after the failed restore");
        Assert.False(Directory.Exists($"/proc/{child}"), $"process {child} is left after the failed restore");
        Untrack(pid);
        Untrack(child);
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
        Untrack(child);
        Assert.Equal(0, ProcessSpawner.Wait(pid) >> 8);
        Untrack(pid);
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

    // ---- files from outside: --inherit-fd and -j ---------------------------------------------------

    private const string PythonTicker = "import time\ni=0\nwhile True:\n    i+=1\n    print(f'tick {i}')\n    time.sleep(0.02)\n";

    /// <summary>The read end of a pipe of ours, read without blocking into lines.</summary>
    private sealed unsafe class PipeLines : IDisposable
    {
        private readonly System.Text.StringBuilder _text = new();
        public int ReadFd { get; }
        public int WriteFd { get; private set; }

        public PipeLines()
        {
            int* p = stackalloc int[2];
            Errno.Check(LibC.pipe2(p, LibC.O_CLOEXEC), "pipe2", "test pipe");
            ReadFd = p[0];
            WriteFd = p[1];
            Errno.Check(LibC.fcntl(ReadFd, LibC.F_SETFL, LibC.O_NONBLOCK), "fcntl", "test pipe");
        }

        public ulong Inode => LibC.Stat($"/proc/self/fd/{ReadFd}").st_ino;

        public void CloseWriteEnd()
        {
            if (WriteFd >= 0) LibC.close(WriteFd);
            WriteFd = -1;
        }

        public string[] Lines
        {
            get
            {
                var buf = new byte[4096];
                fixed (byte* b = buf)
                    while (true)
                    {
                        long n = LibC.read(ReadFd, b, (nuint)buf.Length);
                        if (n <= 0) break;
                        _text.Append(System.Text.Encoding.UTF8.GetString(buf, 0, (int)n));
                    }
                return _text.ToString().Split('\n').SkipLast(1).ToArray();
            }
        }

        public string WaitFor(Func<string, bool> pred, int timeoutMs = 10000)
        {
            var sw = Stopwatch.StartNew();
            while (sw.ElapsedMilliseconds < timeoutMs)
            {
                var l = Lines.FirstOrDefault(pred);
                if (l != null) return l;
                Thread.Sleep(10);
            }
            throw new TimeoutException($"no matching line on the pipe after {timeoutMs} ms; last lines: {string.Join(" | ", Lines.TakeLast(5))}");
        }

        public void Dispose()
        {
            LibC.close(ReadFd);
            CloseWriteEnd();
        }
    }

    /// <summary>crisp as a user runs it (dotnet crisp.dll ...), its output in files of the temp dir.</summary>
    private int StartCli(string name, string[] args, IReadOnlyList<(int Fd, int ChildFd)>? extraFds = null) =>
        Track(CrispCli.Start(Path.Combine(_dir, name + ".out"), Path.Combine(_dir, name + ".err"), args, extraFds));

    private string CliOutput(string name) =>
        $"stdout: {File.ReadAllText(Path.Combine(_dir, name + ".out"))}\nstderr: {File.ReadAllText(Path.Combine(_dir, name + ".err"))}";

    [Fact]
    public void Inherit_fd_gives_a_process_whose_stdout_was_a_pipe_a_new_pipe()
    {
        using var before = new PipeLines();
        int pid = Track(ProcessSpawner.Spawn(new SpawnOptions
        {
            Path = "/usr/bin/python3", Argv = ["python3", "-u", "-c", PythonTicker], Envp = ["PATH=/usr/bin:/bin", "LANG=C"],
            Stdin = StdioSource.DevNull(false), Stdout = StdioSource.FromFd(before.WriteFd), Stderr = StdioSource.DevNull(true),
            NewSession = true,
        }));
        before.CloseWriteEnd();
        before.WaitFor(l => l == "tick 5");
        ulong inode = before.Inode;
        string images = DumpTree(pid, []);
        long last = before.Lines.Select(l => long.Parse(l[5..])).Last();

        // The dumped stdout is pipe:[inode of `before`]; crisp's fd 7 (the write end of `after`) stands in for it.
        using var after = new PipeLines();
        int cli = StartCli("restore", ["restore", "-D", images, "-d", "--inherit-fd", $"fd[7]:pipe:[{inode}]"], [(after.WriteFd, 7)]);
        int status = CrispCli.WaitWithTimeout(cli, TimeSpan.FromSeconds(60), "restore --inherit-fd");
        Untrack(cli);
        Assert.True(status == 0, $"crisp restore: wait status 0x{status:x}\n{CliOutput("restore")}");
        after.CloseWriteEnd();
        Assert.Equal(after.Inode, LibC.Stat($"/proc/{pid}/fd/1").st_ino);
        after.WaitFor(l => l == $"tick {last + 10}");
        var ticks = after.Lines.Select(l => long.Parse(l[5..])).ToList();
        Assert.Equal(last + 1, ticks[0]);
        for (int i = 1; i < ticks.Count; i++) Assert.Equal(ticks[i - 1] + 1, ticks[i]);
    }

    private static string[] PtyLines(string log) =>
        File.Exists(log) ? File.ReadAllText(log).Replace("\r", "").Split('\n').SkipLast(1).ToArray() : [];

    private static int WaitForPidFile(string file)
    {
        var sw = Stopwatch.StartNew();
        while (!File.Exists(file))
        {
            if (sw.ElapsedMilliseconds > 10000) throw new TimeoutException($"{file} never appeared");
            Thread.Sleep(10);
        }
        return int.Parse(File.ReadAllText(file));
    }

    private static string WaitForPtyLine(string log, Func<string, bool> pred, int timeoutMs = 15000)
    {
        var sw = Stopwatch.StartNew();
        while (sw.ElapsedMilliseconds < timeoutMs)
        {
            var l = PtyLines(log).FirstOrDefault(pred);
            if (l != null) return l;
            Thread.Sleep(10);
        }
        throw new TimeoutException($"no matching line in {log}; last lines: {string.Join(" | ", PtyLines(log).TakeLast(5))}");
    }

    [Fact]
    public void Shell_job_restores_a_process_of_one_terminal_onto_the_terminal_of_crisp()
    {
        string ptyrun = Path.Combine(Repo.Workloads, "ptyrun.py");
        string log1 = Path.Combine(_dir, "pty1.log"), log2 = Path.Combine(_dir, "pty2.log");
        string pidFile1 = Path.Combine(_dir, "pty1.pid"), pidFile2 = Path.Combine(_dir, "pty2.pid");
        string ticker = "import os,time\nprint('tty', os.ttyname(1))\ni=0\nwhile True:\n    i+=1\n    print(f'tick {i}')\n    time.sleep(0.02)\n";
        int runner1 = Track(SpawnLogged(Path.Combine(_dir, "runner1.log"), "/usr/bin/python3", ptyrun, log1, pidFile1, "python3", "-u", "-c", ticker));
        int pid = Track(WaitForPidFile(pidFile1));
        string tty1 = WaitForPtyLine(log1, l => l.StartsWith("tty "))[4..];
        WaitForPtyLine(log1, l => l == "tick 5");
        Assert.Equal(tty1, Proc.FdTarget(pid, 1));

        // The dump kills the ticker; the runner reaps it, sees its terminal closed, and ends.
        Dumper.Dump(new DumpOptions { Pid = pid, ImagesDir = Path.Combine(_dir, "img") });
        Assert.True(LibC.WIFEXITED(ProcessSpawner.Wait(runner1)));
        Untrack(runner1);
        Untrack(pid); // reaped by runner1; tracked again once restored
        long last = PtyLines(log1).Where(l => l.StartsWith("tick ")).Select(l => long.Parse(l[5..])).Last();

        int runner2 = Track(SpawnLogged(Path.Combine(_dir, "runner2.log"), "/usr/bin/python3", ptyrun, log2, pidFile2,
            "dotnet", Path.Combine(AppContext.BaseDirectory, "crisp.dll"), "restore", "-j", "-D", Path.Combine(_dir, "img")));
        int cli = Track(WaitForPidFile(pidFile2));
        Track(pid);
        WaitForPtyLine(log2, l => l == $"tick {last + 10}", 30000);
        var ticks = PtyLines(log2).Where(l => l.StartsWith("tick ")).Select(l => long.Parse(l[5..])).ToList();
        Assert.Equal(last + 1, ticks[0]);
        for (int i = 1; i < ticks.Count; i++) Assert.Equal(ticks[i - 1] + 1, ticks[i]);
        string tty2 = Proc.FdTarget(cli, 1);
        Assert.StartsWith("/dev/pts/", tty2);
        foreach (int fd in new[] { 0, 1, 2 }) Assert.Equal(tty2, Proc.FdTarget(pid, fd));

        // crisp restore (without -d) waits for the process and exits with its status.
        LibC.kill(pid, LibC.SIGTERM);
        Assert.Equal(128 + LibC.SIGTERM, ProcessSpawner.Wait(runner2) >> 8);
        Untrack(runner2);
        Untrack(cli);
        Untrack(pid);
    }
}
