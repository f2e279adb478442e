using System.Diagnostics;
using System.Text.RegularExpressions;
using Crisp.Checkpoint.Dump;
using Crisp.Checkpoint.Restore;
using Crisp.Images;
using Crisp.Images.Proto;
using Crisp.Integration.Tests.Lazy;
using Crisp.Integration.Tests.Support;
using Crisp.Native;
using Crisp.TestSupport;
using Xunit;
using Xunit.Abstractions;
using static Crisp.TestSupport.TestProcesses;

namespace Crisp.Integration.Tests.Restore;

/// <summary>
/// The anon-inode files of an event loop (tests/workloads/eventfiles.c): eventfds, a signalfd,
/// timerfds, inotify and nested epolls, dumped and restored eagerly and lazily, judged by what
/// the program itself sees afterwards; and the epoll crisp must refuse.
/// </summary>
public sealed partial class EventFileRestoreTests(ITestOutputHelper output) : LiveProcessTest("eventfiles")
{
    private readonly List<IDisposable> _daemons = [];

    protected override void AfterKill()
    {
        foreach (var d in _daemons) d.Dispose();
    }

    private string Compile(string workload)
    {
        string bin = Gcc.Workload(workload);
        return bin;
    }

    private static string FdInfo(int pid, int fd) => File.ReadAllText($"/proc/{pid}/fdinfo/{fd}");

    private static long LastTick(string log) =>
        Lines(log).Where(l => l.StartsWith("tick ")).Select(l => long.Parse(l[5..])).DefaultIfEmpty(0).Last();

    private static void AssertFdInfo(int pid, int fd, string pattern)
    {
        string text = FdInfo(pid, fd);
        Assert.True(Regex.IsMatch(text, pattern), $"fd {fd} of {pid}: no /{pattern}/ in\n{text}");
    }

    [GeneratedRegex(@"^check eventfd=5 sem=1,1,1,EAGAIN abs=(\d+)$")]
    private static partial Regex CheckLine();

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public unsafe void An_event_loop_keeps_its_counters_signals_timers_watches_and_epoll_registrations(bool lazy)
    {
        string watched = Path.Combine(Dir, "watched");
        Directory.CreateDirectory(watched);
        File.WriteAllText(Path.Combine(watched, "a"), "");
        File.WriteAllText(Path.Combine(watched, "b"), "");
        string log = Path.Combine(Dir, "log");
        int pid = Track(SpawnLogged(log, Compile("eventfiles"), watched));
        Assert.Equal("ready wd=3", WaitForLine(log, l => l.StartsWith("ready") || l.StartsWith("BAD")));
        WaitForLine(log, l => l == "oneshot fired");
        WaitForLine(log, l => l == "tick 3");

        string images = Path.Combine(Dir, "img");
        Dumper.Dump(new DumpOptions { Pid = pid, ImagesDir = images });
        int st;
        LibC.waitpid(pid, &st, 0);
        Crit.DecodeNode(Path.Combine(images, ImageDir.FilesName));
        var files = new ImageDir(images).ReadFiles();
        foreach (var kind in new[] { FdTypes.Eventfd, FdTypes.Signalfd, FdTypes.Timerfd, FdTypes.Inotify, FdTypes.Eventpoll })
            Assert.Contains(files, f => f.Type == kind);
        long ticksAtDump = LastTick(log);
        int linesAtDump = Lines(log).Length;

        LazyDaemon? daemon = null;
        if (lazy)
        {
            daemon = new LazyDaemon(images, Dir);
            _daemons.Add(daemon);
        }
        var r = Restorer.Restore(new RestoreOptions { ImagesDir = images, Lazy = lazy });
        Assert.Equal([pid], r.Pids);

        // The periodic timer, inside the inner epoll inside the outer one, keeps firing.
        // (Its ticks count the periods that passed while it was away: they jump.)
        WaitForLine(log, l => l.StartsWith("tick ") && long.Parse(l[5..]) > ticksAtDump + 3, skip: linesAtDump);

        // What the kernel holds for the restored process, fd by fd (eventfiles.c opens them in this order).
        Assert.Contains("eventfd-semaphore: 0", FdInfo(pid, 3));
        Assert.Contains("eventfd-semaphore: 1", FdInfo(pid, 4));
        Assert.Contains("sigmask:\t0000000000004800", FdInfo(pid, 5)); // SIGUSR2, SIGTERM
        Assert.Contains("settime flags: 01", FdInfo(pid, 7));          // absolute stays absolute
        AssertFdInfo(pid, 8, @"inotify wd:3 .*mask:100 ");
        AssertFdInfo(pid, 8, @"inotify wd:2 .*mask:4 ");
        Assert.DoesNotContain("inotify wd:1 ", FdInfo(pid, 8));         // removed before the dump
        AssertFdInfo(pid, 9, @"tfd:\s+6 events:\s+19 data:\s+7100 ");
        // The one-shot that fired comes back disarmed for EPOLLIN (epoll_ctl always adds EPOLLERR|EPOLLHUP).
        AssertFdInfo(pid, 10, @"tfd:\s+3 events:\s+400000(00|18) data:\s+efd0 ");

        // The program's own view: counters, semaphore reads, the absolute timer's deadline,
        // and epoll_ctl(MOD) on the one-shot registration by its fd number.
        LibC.kill(pid, LibC.SIGUSR2);
        var check = CheckLine().Match(WaitForLine(log, l => l.StartsWith("check") || l.StartsWith("BAD"), skip: linesAtDump));
        Assert.True(check.Success, Lines(log).Last(l => l.StartsWith("check") || l.StartsWith("BAD")));
        long left = long.Parse(check.Groups[1].Value);
        Assert.InRange(left, 900, 999);
        WaitForLine(log, l => l == "rearmed data=efd1" || l.StartsWith("BAD"), skip: linesAtDump);

        File.WriteAllText(Path.Combine(watched, "new"), "");
        Assert.Equal("inotify wd=3 name=new", WaitForLine(log, l => l.StartsWith("inotify wd=3 name=new") || l.StartsWith("BAD"), skip: linesAtDump));

        Assert.DoesNotContain(Lines(log), l => l.StartsWith("BAD"));
        Assert.Single(Lines(log), l => l == "oneshot fired");

        // SIGTERM arrives through the signalfd: the program ends by itself.
        LibC.kill(pid, LibC.SIGTERM);
        var sw = Stopwatch.StartNew();
        while (Alive(pid) && sw.ElapsedMilliseconds < 5000) Thread.Sleep(10);
        Assert.False(Alive(pid), "the restored program did not end on SIGTERM read from its signalfd");
        if (daemon != null)
        {
            int rc = daemon.WaitExit();
            Assert.True(rc == 0, $"lazy-pages exit {rc}: {daemon.Stderr}");
        }
        output.WriteLine($"restored in {r.Elapsed.TotalMilliseconds:F1} ms, lazy={lazy}");
    }

    [Fact]
    public void An_epoll_watching_a_file_no_fd_of_its_process_holds_is_refused_and_the_tree_keeps_running()
    {
        string log = Path.Combine(Dir, "log");
        int pid = Track(SpawnLogged(log, Compile("epollescaped")));
        var first = WaitForLine(log, l => l.StartsWith("epoll ")).Split(' ');
        int epfd = int.Parse(first[1]);
        Track(int.Parse(first[3]));
        WaitForLine(log, l => l == "tick 3");

        var e = Assert.Throws<CrispException>(() => Dumper.Dump(new DumpOptions { Pid = pid, ImagesDir = Path.Combine(Dir, "img") }));
        output.WriteLine(e.Message);
        Assert.Contains($"fd {epfd} is an epoll", e.Message);
        Assert.False(File.Exists(Path.Combine(Dir, "img", ImageDir.InventoryName)), "a failed dump must not look complete");

        Assert.Equal("0", Crisp.Native.ProcFs.Proc.Status(pid).TracerPid.ToString());
        long at = LastTick(log);
        WaitForLine(log, l => l == $"tick {at + 3}");
    }
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public unsafe void Memfds_and_their_mappings_keep_name_size_seals_contents_offsets_and_one_inode_per_memfd(bool lazy)
    {
        string log = Path.Combine(Dir, "mlog");
        int pid = Track(SpawnLogged(log, Compile("memfdfds")));
        WaitForLine(log, l => l == "tick 2");
        LibC.kill(pid, LibC.SIGUSR1);
        string before = WaitForLine(log, l => l.StartsWith("check "));
        Assert.Contains("head=hello memfd tail=tail m2=x same_inode=1 shared_bytes=1 dup_shares_offset=1", before);
        Assert.Contains("map=hello map_shared=1 priv=P", before);

        string images = Path.Combine(Dir, "img");
        Dumper.Dump(new DumpOptions { Pid = pid, ImagesDir = images });
        int st;
        LibC.waitpid(pid, &st, 0);
        foreach (var f in new[] { ImageDir.FilesName, ImageDir.MemfdName }.Concat(Directory.GetFiles(images, "pagemap-shmem-*.img").Select(Path.GetFileName)))
            Crit.DecodeNode(Path.Combine(images, f!));
        int lines = Lines(log).Length;

        if (lazy) _daemons.Add(new LazyDaemon(images, Dir));
        Restorer.Restore(new RestoreOptions { ImagesDir = images, Lazy = lazy });
        WaitForLine(log, l => l.StartsWith("tick "), skip: lines);
        LibC.kill(pid, LibC.SIGUSR1);
        string after = WaitForLine(log, l => l.StartsWith("check "), skip: lines);
        Assert.Equal(before, after);
    }
}
