using Crisp.Checkpoint.Dump;
using Crisp.Checkpoint.Restore;
using Crisp.Integration.Tests.Support;
using Crisp.Native;
using Crisp.Native.ProcFs;
using Xunit;
using Xunit.Abstractions;
using static Crisp.TestSupport.TestProcesses;

namespace Crisp.Integration.Tests.Lazy;

/// <summary>
/// crisp restore --lazy-pages on real processes, served by a real `crisp lazy-pages` started as
/// CRIU's users start it. The restored process runs before its memory is there; the daemon's
/// statistics prove pages came by fault and by prefetch.
/// </summary>
public sealed class LazyRestoreTests : IDisposable
{
    private readonly ITestOutputHelper _out;
    private readonly string _dir;
    private readonly List<int> _pids = [];
    private readonly List<IDisposable> _daemons = [];

    public LazyRestoreTests(ITestOutputHelper output)
    {
        _out = output;
        _dir = TempDir("lazy");
    }

    public void Dispose()
    {
        foreach (var pid in _pids)
            if (Directory.Exists($"/proc/{pid}"))
            {
                foreach (var c in Proc.Children(pid)) LibC.kill(c, LibC.SIGKILL);
                KillAndReap(pid);
            }
        foreach (var d in _daemons) d.Dispose();
        try { Directory.Delete(_dir, true); } catch (IOException) { }
    }

    private string Compile(string name)
    {
        string bin = Gcc.Workload(name);
        return bin;
    }

    private int Spawn(string log, params string[] argv)
    {
        int pid = SpawnLogged(log, argv);
        _pids.Add(pid);
        return pid;
    }

    private unsafe string Dump(int pid)
    {
        string images = Path.Combine(_dir, "img");
        Dumper.Dump(new DumpOptions { Pid = pid, ImagesDir = images });
        int st;
        LibC.waitpid(pid, &st, 0); // the dump killed it: free the pid
        return images;
    }

    private LazyDaemon StartDaemon(string images, string? workDir = null)
    {
        var d = new LazyDaemon(images, _dir, workDir);
        _daemons.Add(d);
        return d;
    }

    private RestoredProcess RestoreLazily(string images, string? workDir = null)
    {
        var r = Restorer.Restore(new RestoreOptions { ImagesDir = images, WorkDir = workDir, Lazy = true });
        _out.WriteLine($"lazy restore took {r.Elapsed.TotalMilliseconds:F1} ms");
        foreach (var (step, took) in r.Steps.Where(s => s.Took.TotalMilliseconds > 0.5))
            _out.WriteLine($"  {step}: {took.TotalMilliseconds:F1} ms");
        return r;
    }

    /// <summary>The daemon finished cleanly and the pages came both ways: faults and background prefetch.</summary>
    private void AssertDeliveredByFaultAndPrefetch(LazyDaemon d, long atLeastPages)
    {
        int rc = d.WaitExit();
        _out.WriteLine(d.Stderr);
        Assert.True(rc == 0, $"lazy-pages exit {rc}: {d.Stderr}");
        long fault = d.Stat("fault_pages"), around = d.Stat("fault_around_pages"), prefetch = d.Stat("prefetch_pages");
        Assert.True(fault > 0, "no page arrived by fault: the restore was not lazy");
        Assert.True(prefetch > 0, "no page arrived by prefetch");
        Assert.True(fault + around + prefetch >= atLeastPages, $"only {fault + around + prefetch} pages delivered, want at least {atLeastPages}");
        Assert.Equal(0, d.Stat("poisoned_pages"));
    }

    [Fact]
    public void Single_threaded_memtouch_runs_at_once_and_keeps_its_checksum()
    {
        string log = Path.Combine(_dir, "log");
        int pid = Spawn(log, Compile("memtouch"), "64", log);
        WaitForLine(log, l => l.StartsWith("tick 5 "));
        string images = Dump(pid);
        int n = Lines(log).Length;
        var d = StartDaemon(images);
        var r = RestoreLazily(images);
        Assert.Equal(pid, r.Pid);
        LibC.kill(pid, LibC.SIGUSR1); // read every page at once: many of them are not there yet
        Assert.StartsWith("check ok", WaitForLine(log, l => l.StartsWith("check "), skip: n, timeoutMs: 60_000));
        AssertDeliveredByFaultAndPrefetch(d, 64 * 256);
        // It goes on running from its own memory once the daemon is gone.
        n = Lines(log).Length;
        WaitForLine(log, l => l.StartsWith("tick "), skip: n + 3);
        LibC.kill(pid, LibC.SIGUSR2);
        Assert.Equal(0, r.WaitForExit());
        _pids.Remove(pid);
    }

    [Fact]
    public void Multi_threaded_memtouch_keeps_every_buffer()
    {
        string log = Path.Combine(_dir, "log");
        int pid = Spawn(log, Compile("memtouch"), "16", log, "3");
        WaitForLine(log, l => l.StartsWith("tick 5 "));
        var tids = Proc.Tasks(pid);
        string images = Dump(pid);
        int n = Lines(log).Length;
        var d = StartDaemon(images);
        RestoreLazily(images);
        LibC.kill(pid, LibC.SIGUSR1);
        Assert.StartsWith("check ok", WaitForLine(log, l => l.StartsWith("check "), skip: n, timeoutMs: 60_000));
        Assert.Equal(tids.OrderBy(t => t), Proc.Tasks(pid).OrderBy(t => t));
        AssertDeliveredByFaultAndPrefetch(d, 4 * 16 * 256);
        // Every worker's counter moves on.
        n = Lines(log).Length;
        WaitForLine(log, l => l.StartsWith("tick "), skip: n + 3);
    }

    /// <summary>
    /// Pages for the in-process daemon of the operations test: channels after the first (the
    /// prefetch worker's) are slowed down, so the workload's operations meet ranges that are
    /// still lazy however loaded the machine is. Faults are served at full speed.
    /// </summary>
    private sealed class SlowPrefetchSource(Crisp.Images.IPageSource inner) : Crisp.Images.IPageSource
    {
        private int _opened;
        public Crisp.Images.IPageChannel OpenChannel() => new Channel(inner.OpenChannel(), Interlocked.Increment(ref _opened) > 1);
        public void Dispose() => inner.Dispose();

        private sealed class Channel(Crisp.Images.IPageChannel c, bool slow) : Crisp.Images.IPageChannel
        {
            public void Read(int pid, ulong vaddr, Span<byte> destination)
            {
                if (slow) Thread.Sleep(2);
                c.Read(pid, vaddr, destination);
            }
            public void Dispose() => c.Dispose();
        }
    }

    /// <summary>A LazyPagesDaemon on a thread of the test process, its prefetch slowed (<see cref="SlowPrefetchSource"/>).</summary>
    private sealed unsafe class InProcessDaemon : IDisposable
    {
        private readonly Thread _thread;
        private readonly Crisp.LazyPages.LazyPagesOptions _options;
        private readonly CancellationTokenSource _cancel = new();
        private int _rc = -1;
        public Crisp.LazyPages.LazyPagesDaemon Daemon { get; }
        public List<string> Log { get; } = [];

        public InProcessDaemon(string images, Action<string> log)
        {
            int* status = stackalloc int[2];
            Errno.Check(LibC.pipe2(status, LibC.O_CLOEXEC), "pipe2", "status pipe");
            var local = Crisp.LazyPages.LazyPagesSetup.ForImages(images, statusFd: status[1], log: Logger.Lines(m => { lock (Log) Log.Add(m); log(m); }));
            _options = new Crisp.LazyPages.LazyPagesOptions
            {
                WorkDir = local.WorkDir, PlanFor = local.PlanFor, StatusFd = local.StatusFd, Log = local.Log, Policy = local.Policy,
                PageSource = new SlowPrefetchSource(local.PageSource),
            };
            Daemon = new Crisp.LazyPages.LazyPagesDaemon(_options);
            _thread = new Thread(() => _rc = Daemon.Run(_cancel.Token)) { IsBackground = true };
            _thread.Start();
            byte b;
            long n = LibC.read(status[0], &b, 1);
            LibC.close(status[0]);
            if (n != 1) throw new InvalidOperationException("the lazy-pages daemon did not start");
        }

        public int WaitExit(int timeoutMs = 60_000)
        {
            if (!_thread.Join(timeoutMs)) throw new TimeoutException("the lazy-pages daemon did not finish");
            return _rc;
        }

        public void Dispose()
        {
            _cancel.Cancel();
            _thread.Join(10_000);
            Daemon.Dispose();
            _options.PageSource.Dispose();
        }
    }

    [Fact]
    public unsafe void Madvise_munmap_mremap_and_fork_on_lazy_ranges_see_exactly_the_right_bytes()
    {
        string log = Path.Combine(_dir, "log");
        int pid = Spawn(log, Compile("lazyops"), "256", log);
        WaitForLine(log, l => l.StartsWith("ready "));
        string images = Dump(pid);

        using var daemon = new InProcessDaemon(images, _out.WriteLine);
        var r = RestoreLazily(images);
        LibC.kill(pid, LibC.SIGUSR1);
        var result = WaitForLine(log, l => l.StartsWith("lazyops "), timeoutMs: 60_000);
        _out.WriteLine(string.Join("\n", Lines(log)));
        Assert.Equal("lazyops ok", result);
        Assert.Equal(0, r.WaitForExit());
        _pids.Remove(pid);
        // The operations hit ranges that were still lazy (not yet filled) when they ran.
        var lazy = WaitForLine(log, l => l.StartsWith("lazy "));
        Assert.Equal("lazy dontneed=64 munmap=64 mremap=256", lazy);
        Assert.Equal(0, daemon.WaitExit());
        _out.WriteLine(daemon.Daemon.Stats.ToString());
        Assert.Equal(1, daemon.Daemon.Stats.Forks);
    }

    private void LoopContinues(int pid, string log)
    {
        static List<long> Ticks(string log) => Lines(log).Where(l => l.StartsWith("tick ")).Select(l => long.Parse(l.Split(' ')[1])).ToList();
        WaitForLine(log, l => l == "tick 5");
        var children = Proc.Children(pid);
        string images = Dump(pid);
        var sw = System.Diagnostics.Stopwatch.StartNew();
        while (children.Any(c => Directory.Exists($"/proc/{c}")) && sw.ElapsedMilliseconds < 3000) Thread.Sleep(5);
        var d = StartDaemon(images);
        long last = Ticks(log)[^1];
        var r = RestoreLazily(images);
        _pids.Add(r.Pid);
        WaitForLine(log, l => l == $"tick {last + 10}", timeoutMs: 20_000);
        var after = Ticks(log);
        for (int i = 1; i < after.Count; i++) Assert.Equal(after[i - 1] + 1, after[i]);
        Assert.Equal(0, d.WaitExit());
        _out.WriteLine(d.Stderr);
        Assert.True(d.Stat("fault_pages") > 0, "no page arrived by fault");
    }

    [Fact]
    public void Bash_loop_output_continues_after_a_lazy_restore()
    {
        string log = Path.Combine(_dir, "log");
        int pid = Spawn(log, "/bin/bash", "-c", "i=0; while :; do i=$((i+1)); echo \"tick $i\"; sleep 0.05; done");
        LoopContinues(pid, log);
    }

    [Fact]
    public void Python_loop_output_continues_after_a_lazy_restore()
    {
        string log = Path.Combine(_dir, "log");
        int pid = Spawn(log, "/usr/bin/python3", "-u", "-c", "import time\ni=0\nwhile True:\n    i+=1\n    print(f'tick {i}')\n    time.sleep(0.05)\n");
        LoopContinues(pid, log);
    }

    [Fact]
    public unsafe void Pages_image_lost_after_restore_means_SIGBUS_or_kill_never_wrong_data()
    {
        string log = Path.Combine(_dir, "log");
        int pid = Spawn(log, Compile("memtouch"), "256", log);
        WaitForLine(log, l => l.StartsWith("tick 3 "));
        string images = Dump(pid);
        int n = Lines(log).Length;
        using var daemon = new InProcessDaemon(images, _out.WriteLine);
        var r = RestoreLazily(images);
        // The restore is done; the daemon (its prefetch slowed) still has most of the memory to
        // deliver. Its pages file loses everything (same inode: the daemon has it open).
        string pages = Directory.GetFiles(images, "pages-*.img").Single();
        using (var f = new FileStream(pages, FileMode.Open, FileAccess.Write)) f.SetLength(0);
        LibC.kill(pid, LibC.SIGUSR1);
        // It must end, SIGBUS on a poisoned page or killed, within a bounded time.
        var sw = System.Diagnostics.Stopwatch.StartNew();
        int status;
        while (LibC.waitpid(pid, &status, LibC.WNOHANG) == 0)
        {
            if (sw.ElapsedMilliseconds > 60_000) Assert.Fail("the process neither got SIGBUS nor was killed within 60 s (hang)");
            Thread.Sleep(10);
        }
        _pids.Remove(pid);
        Assert.False(LibC.WIFEXITED(status), $"memtouch exited with {LibC.WEXITSTATUS(status)} instead of dying");
        Assert.Contains(LibC.WTERMSIG(status), new[] { LibC.SIGBUS, LibC.SIGKILL });
        Assert.DoesNotContain(Lines(log).Skip(n), l => l.StartsWith("check "));
        Assert.Equal(1, daemon.WaitExit());
        string failures = string.Join("\n", daemon.Daemon.Failures);
        _out.WriteLine(failures);
        Assert.Matches("pages at 0x[0-9a-f]+ .*cannot be read", failures);
        _out.WriteLine($"memtouch ended by signal {LibC.WTERMSIG(status)}; {daemon.Daemon.Stats.PoisonedPages} page(s) poisoned");
    }

    [Fact]
    public void No_daemon_gives_a_clear_error_and_leaves_nothing()
    {
        string log = Path.Combine(_dir, "log");
        int pid = Spawn(log, Compile("memtouch"), "4", log);
        WaitForLine(log, l => l.StartsWith("tick 2 "));
        string images = Dump(pid);
        var children = Proc.Children(Environment.ProcessId).ToHashSet();
        var e = Assert.Throws<CrispException>(() => Restorer.Restore(new RestoreOptions { ImagesDir = images, Lazy = true }));
        _out.WriteLine(e.Message);
        Assert.Contains($"no lazy-pages daemon listening on {Path.Combine(images, "lazy-pages.socket")}", e.Message);
        Assert.False(Directory.Exists($"/proc/{pid}"));
        Assert.True(Proc.Children(Environment.ProcessId).ToHashSet().SetEquals(children));
    }

    /// <summary>
    /// CRIU's shape end to end, both commands as separate processes: lazy-pages with --status-fd on a
    /// FIFO and a work directory, then `restore -W DIR --lazy-pages -d --pidfile`, which returns while
    /// the memory is still coming.
    /// </summary>
    [Fact]
    public void Criu_command_shape_works_unchanged()
    {
        string log = Path.Combine(_dir, "log");
        int pid = Spawn(log, Compile("memtouch"), "64", log, "1");
        WaitForLine(log, l => l.StartsWith("tick 5 "));
        string images = Dump(pid);
        string work = Path.Combine(_dir, "work");
        Directory.CreateDirectory(work);
        int n = Lines(log).Length;
        var d = StartDaemon(images, work);
        string pidfile = Path.Combine(_dir, "restored.pid");
        using var cliDir = new Crisp.TestSupport.TempDir();
        var res = CrispCli.Run(cliDir, "restore", "-D", images, "-W", work, "--lazy-pages", "-d", "--pidfile", pidfile);
        Assert.True(res.ExitCode == 0, res.ToString());
        int restored = int.Parse(File.ReadAllText(pidfile).Trim());
        Assert.Equal(pid, restored);
        try
        {
            WaitForLine(log, l => l.StartsWith("tick "), skip: n + 2);
            LibC.kill(pid, LibC.SIGUSR1);
            Assert.StartsWith("check ok", WaitForLine(log, l => l.StartsWith("check "), skip: n, timeoutMs: 60_000));
            AssertDeliveredByFaultAndPrefetch(d, 2 * 64 * 256);
        }
        finally
        {
            // Not our child (restore -d ran in another process): kill it; init reaps it.
            LibC.kill(pid, LibC.SIGKILL);
        }
    }
}
