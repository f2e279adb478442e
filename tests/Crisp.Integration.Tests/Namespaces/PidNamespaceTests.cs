using System.Globalization;
using Crisp.Integration.Tests.Remote;
using Crisp.Integration.Tests.Support;
using Crisp.Native;
using Crisp.TestSupport;
using Xunit;
using static Crisp.Integration.Tests.Remote.RemoteUtil;
using static Crisp.TestSupport.TestProcesses;

namespace Crisp.Integration.Tests.Namespaces;

/// <summary>
/// Trees whose root is init (pid 1) of its own pid namespace, as containers and
/// `unshare --pid --fork` make them: dumped with the pids they see, restored into a new pid
/// namespace with the same pids, while whatever holds the same numbers here stays.
/// </summary>
public class PidNamespaceTests
{
    private static readonly Lazy<TempDir> BinDir = new(() =>
    {
        var d = new TempDir();
        AppDomain.CurrentDomain.ProcessExit += (_, _) => d.Dispose();
        return d;
    });
    private static readonly Lazy<string> PidtreePath = new(() =>
        Gcc.Compile(BinDir.Value, "pidtree", File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "workloads", "pidtree.c")), "-O2"));

    [Fact]
    public void Init_of_its_pid_namespace_with_two_children_and_a_grandchild_keeps_pids_ppids_groups_sessions_and_proc_self()
    {
        using var dir = new TempDir();
        string log = dir["tree.log"];
        using var tree = NsTree.Start(["--mount-proc"], $"exec /usr/bin/setsid {PidtreePath.Value} {log}", () => Lines(log).Contains("ready"));
        var before = Reports(log);
        Assert.Equal(4, before.Count);
        Assert.Contains("report root pid=1 ppid=0 pgid=1 sid=1 self=1", before);

        var d = CrispCli.Run(dir, "dump", "-t", S(tree.Root), "-D", dir["img"]);
        Assert.True(d.ExitCode == 0, d.ToString());
        // As CRIU writes it: pids as the tree sees them, a pid_ns_id that is not the dumper's.
        var pstree = Crit.DecodeNode(Path.Combine(dir["img"], "pstree.img"))["entries"]!.AsArray();
        var seen = before.Select(l => int.Parse(l.Split(' ')[2]["pid=".Length..], CultureInfo.InvariantCulture)).Order();
        Assert.Equal(seen, pstree.Select(e => (int)e!["pid"]!).Order());
        var ids = Crit.DecodeNode(Path.Combine(dir["img"], "ids-1.img"))["entries"]![0]!;
        var rootIds = Crit.DecodeNode(Path.Combine(dir["img"], "inventory.img"))["entries"]![0]!["root_ids"]!;
        Assert.NotEqual((uint)rootIds["pid_ns_id"]!, (uint)ids["pid_ns_id"]!);
        Assert.NotEqual((uint)rootIds["mnt_ns_id"]!, (uint)ids["mnt_ns_id"]!);

        var r = CrispCli.Run(dir, "restore", "-D", dir["img"], "-d", "--pidfile", dir["pid"]);
        Assert.True(r.ExitCode == 0, r.ToString());
        int restored = int.Parse(File.ReadAllText(dir["pid"]), CultureInfo.InvariantCulture);
        tree.Adopt(restored);
        Assert.EndsWith("\t1", NsPid(restored));

        int n = Lines(log).Length;
        Errno.Check(LibC.kill(restored, LibC.SIGUSR1), "kill", $"{restored}, SIGUSR1");
        Assert.True(Poll.Until(() => Lines(log).Skip(n).Count(l => l.StartsWith("report", StringComparison.Ordinal)) == 4, 10_000),
            $"the restored tree did not report:\n{string.Join('\n', Lines(log))}");
        var after = Lines(log).Skip(n).Where(l => l.StartsWith("report", StringComparison.Ordinal)).ToHashSet();
        Assert.Equal(before.ToHashSet(), after);
    }

    [Fact]
    public void Lazy_migration_in_criu_shape_while_the_frozen_source_holds_its_pids_sweeps_ok_and_keeps_ticking()
    {
        using var dir = new TempDir();
        string log = dir["memtouch.log"];
        using var tree = NsTree.Start([], $"exec /usr/bin/setsid {Workloads.Memtouch} 64 {log} 0",
            () => Lines(log).Count(l => l.StartsWith("tick", StringComparison.Ordinal)) >= 2);
        int source = tree.Root;

        using var dump = new BackgroundCrisp(dir, "dump", "dump", "-t", S(source), "-D", dir["src"], "--lazy-pages", "--address", "127.0.0.1", "--port", "0");
        int port = dump.Port("lazy page server listening on");
        CopyImages(dir["src"], dir["dst"]);
        using var lazy = new BackgroundCrisp(dir, "lazy", "lazy-pages", "-D", dir["dst"], "--page-server", "--address", "127.0.0.1", "--port", S(port));
        Assert.True(Poll.Until(() => File.Exists(Path.Combine(dir["dst"], "lazy-pages.socket")) || lazy.Exited, 30_000), lazy.Output);
        // No unshare around the restore: the tree's own pid namespace is made anew.
        var r = CrispCli.Run(dir, "restore", "-D", dir["dst"], "--lazy-pages", "-d", "--pidfile", dir["pid"]);
        Assert.True(r.ExitCode == 0, r.ToString() + "\n" + lazy.Output);
        int moved = int.Parse(File.ReadAllText(dir["pid"]), CultureInfo.InvariantCulture);
        tree.Adopt(moved);
        Assert.NotEqual(source, moved);
        Assert.EndsWith("\t1", NsPid(moved));

        int checks = Lines(log).Count(l => l.StartsWith("check", StringComparison.Ordinal));
        Errno.Check(LibC.kill(moved, LibC.SIGUSR1), "kill", $"{moved}, SIGUSR1");
        Assert.True(Poll.Until(() => Lines(log).Count(l => l.StartsWith("check", StringComparison.Ordinal)) > checks, 60_000), "no check line");
        Assert.StartsWith("check ok", Lines(log).Last(l => l.StartsWith("check", StringComparison.Ordinal)));
        Assert.True(dump.WaitExit(TimeSpan.FromSeconds(60)) == 0, dump.Output);
        Assert.True(Gone(source), "the source is still alive");
        Assert.True(lazy.WaitExit(TimeSpan.FromSeconds(60)) == 0, lazy.Output);
        long last = Ticks(log);
        Assert.True(Poll.Until(() => Ticks(log) > last + 3, 10_000), "the migrated process does not tick");
    }

    [Fact]
    public void Migrate_to_an_agent_without_unshare_moves_init_of_its_pid_namespace()
    {
        using var dir = new TempDir();
        string log = dir["memtouch.log"];
        using var tree = NsTree.Start([], $"exec /usr/bin/setsid {Workloads.Memtouch} 32 {log} 0",
            () => Lines(log).Count(l => l.StartsWith("tick", StringComparison.Ordinal)) >= 2);
        int source = tree.Root;
        using var agent = new BackgroundCrisp(dir, "agent", "agent", "--listen", "127.0.0.1:0");
        int port = agent.Port();
        var r = CrispCli.Run(dir, "migrate", S(source), "--to", $"127.0.0.1:{port}", "--json");
        Assert.True(r.ExitCode == 0, r.ToString() + agent.Output);
        int moved = 0;
        Assert.True(Poll.Until(() => (moved = InitRunning(log, source)) != 0, 30_000), "no restored copy in a new pid namespace\n" + agent.Output);
        tree.Adopt(moved);
        Assert.True(Poll.Until(() => Gone(source), 30_000), "the source is still alive");
        int checks = Lines(log).Count(l => l.StartsWith("check", StringComparison.Ordinal));
        Errno.Check(LibC.kill(moved, LibC.SIGUSR1), "kill", $"{moved}, SIGUSR1");
        Assert.True(Poll.Until(() => Lines(log).Count(l => l.StartsWith("check", StringComparison.Ordinal)) > checks, 60_000), "no check line");
        Assert.StartsWith("check ok", Lines(log).Last(l => l.StartsWith("check", StringComparison.Ordinal)));
        long last = Ticks(log);
        Assert.True(Poll.Until(() => Ticks(log) > last + 3, 10_000), "the migrated process does not tick");
    }

    /// <summary>A process here, other than <paramref name="except"/>, that is pid 1 of a child pid namespace and has <paramref name="arg"/> on its command line; 0 if none.</summary>
    private static int InitRunning(string arg, int except)
    {
        foreach (var d in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(d), out int pid) || pid == except) continue;
            var status = ReadOrEmpty(Path.Combine(d, "status"));
            if (status.Contains("NSpid:\t" + S(pid) + "\t1\n", StringComparison.Ordinal) && ReadOrEmpty(Path.Combine(d, "cmdline")).Contains(arg, StringComparison.Ordinal))
                return pid;
        }
        return 0;
    }

    [Fact]
    public void Python_under_unshare_pid_mount_proc_uts_prints_the_same_pid_ppid_hostname_and_proc_after_restore()
    {
        using var dir = new TempDir();
        string log = dir["py.log"];
        const string loop = "import os, socket, sys, time\nf = open(sys.argv[1], 'a', buffering=1)\nwhile True:\n" +
                            "    f.write('%d %d %s %d\\n' % (os.getpid(), os.getppid(), socket.gethostname(), len(os.listdir('/proc'))))\n    time.sleep(0.05)\n";
        File.WriteAllText(dir["loop.py"], loop);
        using var tree = NsTree.Start(["--mount-proc", "--uts"], $"/usr/bin/hostname crisp-pidns && exec /usr/bin/setsid /usr/bin/python3 {dir["loop.py"]} {log}",
            () => Lines(log).Length >= 2);
        string first = Lines(log)[0];
        Assert.StartsWith("1 0 crisp-pidns ", first);

        var d = CrispCli.Run(dir, "dump", "-t", S(tree.Root), "-D", dir["img"]);
        Assert.True(d.ExitCode == 0, d.ToString());
        Assert.Equal("crisp-pidns", (string)Crit.DecodeNode(Directory.GetFiles(dir["img"], "utsns-*.img").Single())["entries"]![0]!["nodename"]!);
        int n = Lines(log).Length;
        var r = CrispCli.Run(dir, "restore", "-D", dir["img"], "-d", "--pidfile", dir["pid"]);
        Assert.True(r.ExitCode == 0, r.ToString());
        tree.Adopt(int.Parse(File.ReadAllText(dir["pid"]), CultureInfo.InvariantCulture));
        Assert.True(Poll.Until(() => Lines(log).Length >= n + 3, 10_000), "the restored loop does not print");
        Assert.All(Lines(log).Skip(n), l => Assert.Equal(first, l));
        Assert.NotEqual("crisp-pidns", File.ReadAllText("/proc/sys/kernel/hostname").Trim());
    }

    [Criu4Fact]
    public void Crisp_dump_of_init_of_a_pid_and_uts_namespace_restores_with_criu4_and_criu4_dump_with_crisp()
    {
        using var dir = new TempDir();
        string log = dir["tree.log"];
        using var tree = NsTree.Start(["--uts"], $"/usr/bin/hostname crisp-criu && exec /usr/bin/setsid {PidtreePath.Value} {log}", () => Lines(log).Contains("ready"));
        // No /proc of its own here: /proc/self is the host's number, which a restore changes.
        var before = Reports(log).Select(WithoutSelf).ToHashSet();
        var d = CrispCli.Run(dir, "dump", "-t", S(tree.Root), "-D", dir["img"]);
        Assert.True(d.ExitCode == 0, d.ToString());
        var (code, _) = Criu4.Run(TimeSpan.FromSeconds(60), "restore", "-D", dir["img"], "-d", "-o", "restore.log", "--pidfile", dir["pid"]);
        Assert.True(code == 0, $"criu4 restore: exit {code}: {Criu4.Errors(Path.Combine(dir["img"], "restore.log"))}");
        int byCriu = int.Parse(File.ReadAllText(dir["pid"]).Trim(), CultureInfo.InvariantCulture);
        tree.Adopt(byCriu);
        Assert.Equal(before, Report(log, byCriu).Select(WithoutSelf).ToHashSet());

        // And back: CRIU dumps what it restored, crisp restores that.
        Directory.CreateDirectory(dir["img2"]);
        var (dumped, _) = Criu4.Run(TimeSpan.FromSeconds(60), "dump", "-t", S(byCriu), "-D", dir["img2"], "-o", "dump.log");
        Assert.True(dumped == 0, $"criu4 dump: exit {dumped}: {Criu4.Errors(Path.Combine(dir["img2"], "dump.log"))}");
        var r = CrispCli.Run(dir, "restore", "-D", dir["img2"], "-d", "--pidfile", dir["pid2"]);
        Assert.True(r.ExitCode == 0, r.ToString());
        int byCrisp = int.Parse(File.ReadAllText(dir["pid2"]), CultureInfo.InvariantCulture);
        tree.Adopt(byCrisp);
        Assert.Equal(before, Report(log, byCrisp).Select(WithoutSelf).ToHashSet());
    }

    private static string WithoutSelf(string report) => report[..report.IndexOf(" self=", StringComparison.Ordinal)];

    /// <summary>SIGUSR1 to a restored root; the four report lines the tree writes then.</summary>
    private static HashSet<string> Report(string log, int root)
    {
        int n = Lines(log).Length;
        Errno.Check(LibC.kill(root, LibC.SIGUSR1), "kill", $"{root}, SIGUSR1");
        Assert.True(Poll.Until(() => Lines(log).Skip(n).Count(l => l.StartsWith("report", StringComparison.Ordinal)) == 4, 10_000),
            $"the restored tree did not report:\n{string.Join('\n', Lines(log))}");
        return Lines(log).Skip(n).Where(l => l.StartsWith("report", StringComparison.Ordinal)).ToHashSet();
    }

    [Theory]
    // A network namespace the tree owns is dumped (Sockets/OwnedNetnsTests.cs), but not one unshare, outside the tree, is in too.
    [InlineData("--net", "outside the tree is in it too")]
    [InlineData("--cgroup", "own cgroup namespace")]
    public void A_tree_with_its_own_cgroup_namespace_or_a_network_namespace_shared_with_unshare_is_refused_by_name_and_left_running(string option, string refusal)
    {
        using var dir = new TempDir();
        string log = dir["tree.log"];
        using var tree = NsTree.Start([option], $"exec /usr/bin/setsid {PidtreePath.Value} {log}", () => Lines(log).Contains("ready"));
        var d = CrispCli.Run(dir, "dump", "-t", S(tree.Root), "-D", dir["img"]);
        Assert.Equal(1, d.ExitCode);
        Assert.Contains(refusal, d.Stderr);
        Assert.False(File.Exists(Path.Combine(dir["img"], "inventory.img")));
        int n = Lines(log).Length;
        Errno.Check(LibC.kill(tree.Root, LibC.SIGUSR1), "kill", $"{tree.Root}, SIGUSR1");
        Assert.True(Poll.Until(() => Lines(log).Length >= n + 4, 10_000), "the tree stopped running after the refused dump");
    }

    [Fact]
    public void A_tree_that_runs_unshare_pid_fork_inside_its_pid_namespace_is_restored_with_the_inner_pids()
    {
        using var dir = new TempDir();
        string log = dir["tree.log"];
        // sh (pid 1) -> unshare -> pidtree, init of a pid namespace inside the tree's (CRIU refuses
        // this at dump; crisp records the inner pids in its own image: NestedPidNamespaceTests).
        using var tree = NsTree.Start(["--mount-proc"], $"exec /usr/bin/setsid /bin/sh -c '/usr/bin/unshare --pid --fork {PidtreePath.Value} {log}; :'",
            () => Lines(log).Contains("ready"));
        int inner = Children(Children(tree.Root).Single()).Single();
        Assert.EndsWith("\t1", NsPid(inner));
        string innerPids = NsPid(inner);
        Assert.Equal(4, innerPids.Split('\t').Length);  // here, in the tree's namespace, in its own
        var before = Reports(log).ToHashSet();
        Assert.Contains(before, l => l.StartsWith("report root pid=1 ppid=0 ", StringComparison.Ordinal));
        var d = CrispCli.Run(dir, "dump", "-t", S(tree.Root), "-D", dir["img"]);
        Assert.True(d.ExitCode == 0, d.ToString());
        var r = CrispCli.Run(dir, "restore", "-D", dir["img"], "-d", "--pidfile", dir["pid"]);
        Assert.True(r.ExitCode == 0, r.ToString());
        int restored = int.Parse(File.ReadAllText(dir["pid"]), CultureInfo.InvariantCulture);
        tree.Adopt(restored);
        int innerNow = Children(Children(restored).Single()).Single();
        Assert.Equal(innerPids.Split('\t').Skip(2), NsPid(innerNow).Split('\t').Skip(2));
        Assert.Equal(before, Report(log, innerNow));
    }

    private static int[] Children(int pid) =>
        ReadOrEmpty($"/proc/{pid}/task/{pid}/children").Split(' ', StringSplitOptions.RemoveEmptyEntries).Select(c => int.Parse(c, CultureInfo.InvariantCulture)).ToArray();

    private static readonly Lazy<string> ThreadtimerPath = new(() =>
        Gcc.Compile(BinDir.Value, "threadtimer", File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "workloads", "threadtimer.c")), "-O2", "-pthread"));

    /// <summary>
    /// A POSIX timer that signals one thread (SIGEV_THREAD_ID, what glibc's SIGEV_THREAD timers use)
    /// names that thread by its tid; /proc/PID/timers shows it as crisp's /proc sees it, but the
    /// timer is re-created inside the tree, where the tid is the namespace's. The same holds for
    /// the signals queued again on restore: threadtimer keeps one pending on its worker and one on
    /// the process, blocked for good.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void A_timer_that_signals_one_thread_in_a_pid_namespace_still_signals_that_thread_after_restore(bool nested)
    {
        using var dir = new TempDir();
        string log = dir["timer.log"];
        // Nested: sh (pid 1) -> unshare -> threadtimer, init of a pid namespace inside the tree's.
        string script = nested
            ? $"exec /usr/bin/setsid /bin/sh -c '/usr/bin/unshare --pid --fork {ThreadtimerPath.Value} {log}; :'"
            : $"exec /usr/bin/setsid {ThreadtimerPath.Value} {log}";
        using var tree = NsTree.Start(["--mount-proc"], script, () => Lines(log).Any(l => l.StartsWith("ready", StringComparison.Ordinal)));
        string ready = Lines(log).First(l => l.StartsWith("ready", StringComparison.Ordinal));
        string tid = ready.Split(' ')[1];
        int timerProc = Timerproc(tree.Root);
        int hostTid = Directory.GetDirectories($"/proc/{timerProc}/task").Select(d => int.Parse(Path.GetFileName(d), CultureInfo.InvariantCulture)).Single(t => t != timerProc);
        Assert.NotEqual("tid=" + hostTid.ToString(CultureInfo.InvariantCulture), tid);   // else the test could not tell the two views apart

        var d = CrispCli.Run(dir, "dump", "-t", S(tree.Root), "-D", dir["img"]);
        Assert.True(d.ExitCode == 0, d.ToString());
        if (!nested)
        {
            // As the tree sees it (CRIU's meaning); a nested task's pids below the root's are in crisp-nested-pids.img.
            var core = Crit.DecodeNode(Path.Combine(dir["img"], "core-1.img"))["entries"]![0]!;
            var timer = core["tc"]!["timers"]!["posix"]![0]!;
            Assert.Equal(tid, "tid=" + (int)timer["notify_thread_id"]!);
        }

        var r = CrispCli.Run(dir, "restore", "-D", dir["img"], "-d", "--pidfile", dir["pid"]);
        Assert.True(r.ExitCode == 0, r.ToString());
        int restoredRoot = int.Parse(File.ReadAllText(dir["pid"]), CultureInfo.InvariantCulture);
        tree.Adopt(restoredRoot);
        int restored = Timerproc(restoredRoot);
        int worker = Directory.GetDirectories($"/proc/{restored}/task").Select(d => int.Parse(Path.GetFileName(d), CultureInfo.InvariantCulture)).Single(t => t != restored);
        // SIGRTMIN is 34 under glibc: SIGRTMIN+2 pending on the worker, SIGRTMIN+3 on the process.
        Assert.Equal(1UL << (36 - 1), PendingMask(worker, restored, "SigPnd") & (1UL << (36 - 1)));
        Assert.Equal(1UL << (37 - 1), PendingMask(restored, restored, "ShdPnd") & (1UL << (37 - 1)));

        // Two reports 100 ms apart: the hits keep coming, on the worker only.
        long Hits(string line) => long.Parse(line.Split(' ')[2]["hits=".Length..], CultureInfo.InvariantCulture);
        string Report(int n)
        {
            Errno.Check(LibC.kill(restored, LibC.SIGUSR1), "kill", $"{restored}, SIGUSR1");
            Assert.True(Poll.Until(() => Reports(log).Count >= n, 10_000), $"the restored process did not report:\n{string.Join('\n', Lines(log))}");
            return Reports(log)[n - 1];
        }
        string first = Report(1);
        Assert.True(Poll.Until(() => Hits(Report(Reports(log).Count + 1)) >= Hits(first) + 5, 10_000),
            $"the timer stopped signalling its thread after restore:\n{string.Join('\n', Lines(log))}");
        foreach (var line in Reports(log))
        {
            Assert.StartsWith($"report {tid} ", line);
            Assert.EndsWith(" wrong=0", line);
        }
    }

    /// <summary>The threadtimer process at or below <paramref name="root"/>.</summary>
    private static int Timerproc(int root)
    {
        var todo = new Stack<int>([root]);
        while (todo.Count > 0)
        {
            int p = todo.Pop();
            if (ReadOrEmpty($"/proc/{p}/comm").Trim() == "threadtimer") return p;
            foreach (var c in ReadOrEmpty($"/proc/{p}/task/{p}/children").Split(' ', StringSplitOptions.RemoveEmptyEntries))
                todo.Push(int.Parse(c, CultureInfo.InvariantCulture));
        }
        throw new InvalidOperationException($"no threadtimer below {root}");
    }

    /// <summary>A signal mask line (SigPnd, ShdPnd) of /proc/PID/task/TID/status.</summary>
    private static ulong PendingMask(int tid, int pid, string field) =>
        ulong.Parse(ReadOrEmpty($"/proc/{pid}/task/{tid}/status").Split('\n').Single(l => l.StartsWith(field + ":", StringComparison.Ordinal))[(field.Length + 1)..].Trim(),
            NumberStyles.HexNumber, CultureInfo.InvariantCulture);

    private static string[] Lines(string path) => Poll.ReadFile(path).Split('\n', StringSplitOptions.RemoveEmptyEntries);

    private static List<string> Reports(string path) => Lines(path).Where(l => l.StartsWith("report", StringComparison.Ordinal)).ToList();

    private static long Ticks(string path) =>
        Lines(path).Where(l => l.StartsWith("tick ", StringComparison.Ordinal)).Select(l => long.Parse(l.Split(' ')[1], CultureInfo.InvariantCulture)).DefaultIfEmpty(0).Last();


    private static string NsPid(int pid) =>
        File.ReadAllLines($"/proc/{pid}/status").First(l => l.StartsWith("NSpid:", StringComparison.Ordinal));

    /// <summary>
    /// `setsid unshare --pid --fork EXTRA sh -c SCRIPT`: the root is unshare's child, pid 1 inside.
    /// Dispose kills exactly unshare, the root, and the restored roots it was given (killing a
    /// namespace's init ends the namespace).
    /// </summary>
    internal sealed class NsTree : IDisposable
    {
        private readonly ChildProcess _unshare;
        private readonly List<int> _adopted = [];

        public int Root { get; }

        private NsTree(ChildProcess unshare, int root) { _unshare = unshare; Root = root; }

        public static NsTree Start(string[] extra, string script, Func<bool> ready)
        {
            var u = ChildProcess.Start("/usr/bin/unshare", ["--pid", "--fork", .. extra, "/bin/sh", "-c", script], newSession: true);
            int root = 0;
            try
            {
                if (!Poll.Until(() => (root = Child(u.Pid)) != 0 && ready(), 60_000))
                    throw new InvalidOperationException($"the tree under unshare {u.Pid} never became ready (root {root})");
            }
            catch { u.Dispose(); throw; }
            return new NsTree(u, root);
        }

        public void Adopt(int pid) => _adopted.Add(pid);

        private static int Child(int pid)
        {
            var c = ReadOrEmpty($"/proc/{pid}/task/{pid}/children").Split(' ', StringSplitOptions.RemoveEmptyEntries);
            return c.Length == 1 ? int.Parse(c[0], CultureInfo.InvariantCulture) : 0;
        }

        public void Dispose()
        {
            // Only while they are still what they were: a restored root is init of a namespace, the source root unshare's child.
            foreach (int pid in _adopted)
                if (ReadOrEmpty($"/proc/{pid}/status").Contains("NSpid:\t" + pid.ToString(CultureInfo.InvariantCulture) + "\t1\n", StringComparison.Ordinal))
                    LibC.kill(pid, LibC.SIGKILL);
            if (Child(_unshare.Pid) == Root) LibC.kill(Root, LibC.SIGKILL);
            _unshare.Dispose();
        }
    }
}
