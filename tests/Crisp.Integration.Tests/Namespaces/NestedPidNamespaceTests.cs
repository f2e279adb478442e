using System.Globalization;
using Crisp.Integration.Tests.Remote;
using Crisp.Integration.Tests.Support;
using Crisp.Native;
using Crisp.TestSupport;
using Xunit;
using static Crisp.Integration.Tests.Remote.RemoteUtil;

namespace Crisp.Integration.Tests.Namespaces;

/// <summary>
/// Trees with pid namespaces inside them (tests/workloads/nestedpids.c): root → n1 (init of L1,
/// clone(CLONE_NEWPID)) → g1, and n1 → n2 (init of L2 below L1, unshare(CLONE_NEWPID) and fork)
/// → g2. Each task reports getpid/getppid, its children as fork gave them (and whether it still
/// finds them) and its memory; the reports must be the same after the restore, every task must
/// have its dumped pid at every level from the root's namespace inward, and the nested inits
/// must still take their namespaces down when they die.
/// </summary>
public class NestedPidNamespaceTests
{
    private static string Nestedpids => Gcc.Workload("nestedpids");

    private static readonly string[] Names = ["root", "n1", "g1", "n2", "g2"];

    [Fact]
    public void A_plain_root_with_two_levels_of_nested_pid_namespaces_keeps_every_pid_and_a_dying_init_takes_its_namespace()
    {
        using var dir = new TempDir();
        string log = dir["tree.log"];
        using var tree = NestedTree.StartPlain(log);
        var before = Reports(log);
        Assert.Equal(5, before.Count);
        Assert.Contains(before, l => l.StartsWith("report n1 pid=1 ppid=0 kids=2:seen,3:seen mem=ok", StringComparison.Ordinal));
        Assert.Contains(before, l => l.StartsWith("report n2 pid=1 ppid=0 kids=2:seen mem=ok", StringComparison.Ordinal));
        var tasks = Tasks(tree.Root);
        var nspids = tasks.ToDictionary(kv => kv.Key, kv => NsPid(kv.Value));

        var d = CrispCli.Run(dir, "dump", "-t", S(tree.Root), "-D", dir["img"]);
        Assert.True(d.ExitCode == 0, d.ToString());
        // ids as CRIU writes them: one pid_ns_id per namespace; the inner pids in crisp's own image.
        uint Ns(string name) => (uint)Crit.DecodeNode(Path.Combine(dir["img"], $"ids-{tasks[name]}.img"))["entries"]![0]!["pid_ns_id"]!;
        var rootIds = Crit.DecodeNode(Path.Combine(dir["img"], "inventory.img"))["entries"]![0]!["root_ids"]!;
        Assert.Equal((uint)rootIds["pid_ns_id"]!, Ns("root"));
        Assert.Equal(Ns("n1"), Ns("g1"));
        Assert.Equal(Ns("n2"), Ns("g2"));
        Assert.Equal(3, new[] { Ns("root"), Ns("n1"), Ns("n2") }.Distinct().Count());
        Assert.True(File.Exists(Path.Combine(dir["img"], "crisp-nested-pids.img")));
        var pstree = Crit.DecodeNode(Path.Combine(dir["img"], "pstree.img"))["entries"]!.AsArray();
        Assert.Equal(tasks.Values.Order(), pstree.Select(e => (int)e!["pid"]!).Order());
        Assert.True(Poll.Until(() => Gone(tasks["n1"]) && Gone(tasks["g2"]), 10_000), "the dumped tree is still alive");
        tree.ReapRoot();

        var r = CrispCli.Run(dir, "restore", "-D", dir["img"], "-d", "--pidfile", dir["pid"]);
        Assert.True(r.ExitCode == 0, r.ToString());
        int restored = int.Parse(File.ReadAllText(dir["pid"]), CultureInfo.InvariantCulture);
        tree.Adopt(restored);
        var after = Tasks(restored);
        tree.Adopt(after["n1"]);
        // The root is in crisp's namespace: every level has the very numbers it had.
        foreach (var n in Names) Assert.Equal(nspids[n], NsPid(after[n]));

        // The plain root's own parent is whoever adopted it (-d), not the test.
        Assert.Equal(before.Select(WithoutRootPpid).ToHashSet(), Report(log, restored).Select(WithoutRootPpid).ToHashSet());
        long last = Ticks(log);
        Assert.True(Poll.Until(() => Ticks(log) > last + 3, 10_000), "the restored root does not tick");

        // The kernel's rule holds for the restored namespaces: an init's death ends its namespace.
        Errno.Check(LibC.kill(after["n2"], LibC.SIGKILL), "kill", $"n2 {after["n2"]}");
        Assert.True(Poll.Until(() => Gone(after["g2"]), 10_000), "g2 outlived the init of its namespace");
        Assert.False(Gone(after["g1"]), "g1 died with n2's namespace, which it is not in");
        Errno.Check(LibC.kill(after["n1"], LibC.SIGKILL), "kill", $"n1 {after["n1"]}");
        Assert.True(Poll.Until(() => Gone(after["g1"]), 10_000), "g1 outlived the init of its namespace");
        Assert.False(Gone(restored), "the root died with n1's namespace");
    }

    [Fact]
    public void Lazy_migration_in_criu_shape_of_init_of_its_pid_namespace_with_nested_namespaces_keeps_their_pids_and_memory()
    {
        using var dir = new TempDir();
        string log = dir["tree.log"];
        using var tree = PidNamespaceTests.NsTree.Start([], $"exec /usr/bin/setsid {Nestedpids} {log}", () => Lines(log).Contains("ready"));
        var before = Reports(log);
        Assert.Contains("report root pid=1 ppid=0 kids=2:seen mem=ok", before);
        var inner = Tasks(tree.Root).ToDictionary(kv => kv.Key, kv => InnerLevels(kv.Value));
        int source = tree.Root;

        using var dump = new BackgroundCrisp(dir, "dump", "dump", "-t", S(source), "-D", dir["src"], "--lazy-pages", "--address", "127.0.0.1", "--port", "0");
        int port = dump.Port("lazy page server listening on");
        CopyImages(dir["src"], dir["dst"]);
        using var lazy = new BackgroundCrisp(dir, "lazy", "lazy-pages", "-D", dir["dst"], "--page-server", "--address", "127.0.0.1", "--port", S(port));
        Assert.True(Poll.Until(() => File.Exists(Path.Combine(dir["dst"], "lazy-pages.socket")) || lazy.Exited, 30_000), lazy.Output);
        var r = CrispCli.Run(dir, "restore", "-D", dir["dst"], "--lazy-pages", "-d", "--pidfile", dir["pid"]);
        Assert.True(r.ExitCode == 0, r.ToString() + "\n" + lazy.Output);
        int moved = int.Parse(File.ReadAllText(dir["pid"]), CultureInfo.InvariantCulture);
        tree.Adopt(moved);
        var after = Tasks(moved);
        // From the root's namespace inward the pids are the dumped ones (the outermost level is crisp's, free).
        foreach (var n in Names) Assert.Equal(inner[n], InnerLevels(after[n]));

        Assert.Equal(before.ToHashSet(), Report(log, moved));
        Assert.True(dump.WaitExit(TimeSpan.FromSeconds(60)) == 0, dump.Output);
        Assert.True(Gone(source), "the source is still alive");
        Assert.True(lazy.WaitExit(TimeSpan.FromSeconds(60)) == 0, lazy.Output);
        long last = Ticks(log);
        Assert.True(Poll.Until(() => Ticks(log) > last + 3, 10_000), "the migrated root does not tick");
        Errno.Check(LibC.kill(after["n1"], LibC.SIGKILL), "kill", $"n1 {after["n1"]}");
        Assert.True(Poll.Until(() => Gone(after["g1"]) && Gone(after["g2"]), 10_000), "tasks of n1's namespace outlived it");
    }

    [Fact]
    public void Migrate_to_an_agent_moves_a_tree_with_nested_pid_namespaces()
    {
        using var dir = new TempDir();
        string log = dir["tree.log"];
        using var tree = PidNamespaceTests.NsTree.Start([], $"exec /usr/bin/setsid {Nestedpids} {log}", () => Lines(log).Contains("ready"));
        var before = Reports(log);
        var inner = Tasks(tree.Root).ToDictionary(kv => kv.Key, kv => InnerLevels(kv.Value));
        int source = tree.Root;
        using var agent = new BackgroundCrisp(dir, "agent", "agent", "--listen", "127.0.0.1:0");
        int port = agent.Port();
        var r = CrispCli.Run(dir, "migrate", S(source), "--to", $"127.0.0.1:{port}", "--json");
        Assert.True(r.ExitCode == 0, r.ToString() + agent.Output);
        int moved = 0;
        Assert.True(Poll.Until(() => (moved = RootRunning(log, source)) != 0, 30_000), "no restored copy\n" + agent.Output);
        tree.Adopt(moved);
        Assert.True(Poll.Until(() => Gone(source), 30_000), "the source is still alive");
        Dictionary<string, int> after = [];
        Assert.True(Poll.Until(() => { try { after = Tasks(moved); return true; } catch (InvalidOperationException) { return false; } }, 10_000), "the moved tree is not whole");
        foreach (var n in Names) Assert.Equal(inner[n], InnerLevels(after[n]));
        Assert.Equal(before.ToHashSet(), Report(log, moved));
        long last = Ticks(log);
        Assert.True(Poll.Until(() => Ticks(log) > last + 3, 10_000), "the migrated root does not tick");
    }

    [Criu4Fact]
    public void Criu4_refuses_crisp_images_of_nested_pid_namespaces_and_starts_nothing()
    {
        using var dir = new TempDir();
        string log = dir["tree.log"];
        using var tree = NestedTree.StartPlain(log);
        var tasks = Tasks(tree.Root);
        var d = CrispCli.Run(dir, "dump", "-t", S(tree.Root), "-D", dir["img"]);
        Assert.True(d.ExitCode == 0, d.ToString());
        Assert.True(Poll.Until(() => tasks.Values.All(Gone), 10_000), "the dumped tree is still alive");
        tree.ReapRoot();
        var (code, _) = Criu4.Run(TimeSpan.FromSeconds(60), "restore", "-D", dir["img"], "-d", "-o", "restore.log", "--pidfile", dir["pid"]);
        string errors = Criu4.Errors(Path.Combine(dir["img"], "restore.log"));
        if (File.Exists(dir["pid"])) tree.Adopt(int.Parse(File.ReadAllText(dir["pid"]).Trim(), CultureInfo.InvariantCulture));
        Assert.NotEqual(0, code);
        Assert.Contains("Can't restore sub-task in NS", errors);
        Assert.True(tasks.Values.All(Gone), "criu4 restore left a process of the tree");
        Assert.Equal(0, RootRunning(log, 0));
    }

    [Fact]
    public void A_nested_pid_namespace_with_its_own_mount_namespace_and_proc_is_refused_by_name_and_left_running()
    {
        using var dir = new TempDir();
        string log = dir["tree.log"];
        using var sh = ChildProcess.Start("/bin/sh", ["-c", $"/usr/bin/unshare --pid --fork --mount-proc {Nestedpids} {log}; :"], newSession: true);
        int init = 0;
        try
        {
            Assert.True(Poll.Until(() => Lines(log).Contains("ready"), 30_000), "the tree never became ready");
            int unshare = Children(sh.Pid).Single();
            init = Children(unshare).Single();
            var d = CrispCli.Run(dir, "dump", "-t", S(sh.Pid), "-D", dir["img"]);
            Assert.Equal(1, d.ExitCode);
            // unshare itself made the mount namespace (and the pid namespace its child is init of).
            Assert.Contains($"process {unshare} is in another mnt namespace than the tree's root {sh.Pid}", d.Stderr);
            Assert.False(File.Exists(Path.Combine(dir["img"], "inventory.img")));
            int n = Reports(log).Count;
            Errno.Check(LibC.kill(init, LibC.SIGUSR1), "kill", $"{init}, SIGUSR1");
            Assert.True(Poll.Until(() => Reports(log).Count >= n + 5, 10_000), "the tree stopped running after the refused dump");
        }
        finally
        {
            if (init != 0 && Poll.ReadFile($"/proc/{init}/cmdline").Contains(log, StringComparison.Ordinal)) LibC.kill(init, LibC.SIGKILL);
        }
    }

    private static string WithoutRootPpid(string report) =>
        report.StartsWith("report root ", StringComparison.Ordinal) ? System.Text.RegularExpressions.Regex.Replace(report, " ppid=[0-9]+", "") : report;

    [Theory]
    [InlineData("sibling", "(pid 2 of its pid namespace) is in a pid namespace below its parent")]
    [InlineData("unforked", "called unshare(CLONE_NEWPID) and its new pid namespace has no process yet")]
    public void Pid_namespace_shapes_restore_cannot_make_are_refused_naming_the_process_and_left_running(string shape, string refusal)
    {
        using var dir = new TempDir();
        string log = dir["tree.log"];
        using var root = ChildProcess.Start(Nestedpids, [log, shape], newSession: true);
        int[] kids = [];
        try
        {
            Assert.True(Poll.Until(() => Lines(log).Contains("ready"), 30_000), "the tree never became ready");
            kids = Children(root.Pid);
            var d = CrispCli.Run(dir, "dump", "-t", S(root.Pid), "-D", dir["img"]);
            Assert.Equal(1, d.ExitCode);
            Assert.Contains(refusal, d.Stderr);
            int named = shape == "sibling" ? kids.Single(k => NsPid(k).EndsWith("\t2", StringComparison.Ordinal)) : root.Pid;
            Assert.Contains($"process {named} ", d.Stderr);
            Assert.False(File.Exists(Path.Combine(dir["img"], "inventory.img")));
            long last = Ticks(log);
            Assert.True(Poll.Until(() => Ticks(log) > last + 3, 10_000), "the tree stopped running after the refused dump");
        }
        finally
        {
            // The init of the unshared namespace first: its death ends the namespace.
            foreach (int k in kids)
                if (Poll.ReadFile($"/proc/{k}/cmdline").Contains(log, StringComparison.Ordinal)) LibC.kill(k, LibC.SIGKILL);
        }
    }

    /// <summary>The five tasks by name, by their pids here: root → n1 → (g1, n2 → g2).</summary>
    private static Dictionary<string, int> Tasks(int root)
    {
        int n1 = Children(root).Single();
        var kids = Children(n1);
        if (kids.Length != 2) throw new InvalidOperationException($"n1 {n1} has {kids.Length} children");
        int n2 = kids.Single(k => NsPid(k).EndsWith("\t1", StringComparison.Ordinal));
        int g1 = kids.Single(k => k != n2);
        return new() { ["root"] = root, ["n1"] = n1, ["g1"] = g1, ["n2"] = n2, ["g2"] = Children(n2).Single() };
    }

    /// <summary>A process here, other than <paramref name="except"/>, running the workload with <paramref name="log"/> as pid 1 of a namespace one level down; 0 if none.</summary>
    private static int RootRunning(string log, int except)
    {
        foreach (var d in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(d), out int pid) || pid == except) continue;
            if (!Poll.ReadFile(Path.Combine(d, "cmdline")).Contains(log, StringComparison.Ordinal)) continue;
            if (Poll.ReadFile(Path.Combine(d, "status")).Contains("NSpid:\t" + S(pid) + "\t1\n", StringComparison.Ordinal)) return pid;
        }
        return 0;
    }

    /// <summary>SIGUSR1 to a root; the five report lines the tree writes then.</summary>
    private static HashSet<string> Report(string log, int root)
    {
        int n = Lines(log).Length;
        Errno.Check(LibC.kill(root, LibC.SIGUSR1), "kill", $"{root}, SIGUSR1");
        Assert.True(Poll.Until(() => Lines(log).Skip(n).Count(l => l.StartsWith("report", StringComparison.Ordinal)) == 5, 10_000),
            $"the restored tree did not report:\n{string.Join('\n', Lines(log).Where(l => !l.StartsWith("tick", StringComparison.Ordinal)))}");
        return Lines(log).Skip(n).Where(l => l.StartsWith("report", StringComparison.Ordinal)).ToHashSet();
    }

    private static int[] Children(int pid) =>
        Poll.ReadFile($"/proc/{pid}/task/{pid}/children").Split(' ', StringSplitOptions.RemoveEmptyEntries).Select(c => int.Parse(c, CultureInfo.InvariantCulture)).ToArray();

    private static string[] Lines(string path) => Poll.ReadFile(path).Split('\n', StringSplitOptions.RemoveEmptyEntries);

    private static List<string> Reports(string path) => Lines(path).Where(l => l.StartsWith("report", StringComparison.Ordinal)).ToList();

    private static long Ticks(string path) =>
        Lines(path).Where(l => l.StartsWith("tick ", StringComparison.Ordinal)).Select(l => long.Parse(l.Split(' ')[1], CultureInfo.InvariantCulture)).DefaultIfEmpty(0).Last();

    private static string NsPid(int pid) =>
        File.ReadAllLines($"/proc/{pid}/status").First(l => l.StartsWith("NSpid:", StringComparison.Ordinal));

    /// <summary>NSpid without its first (crisp's) column: the pids from the tree's root namespace inward.</summary>
    private static string InnerLevels(int pid) => string.Join('\t', NsPid(pid).Split('\t').Skip(2));

    /// <summary>
    /// The workload started as a plain process (its root in crisp's pid namespace). Dispose kills
    /// the original root and the nested inits and restored roots it was given, each only while it
    /// still runs the workload with this log (an init's death ends its namespace).
    /// </summary>
    private sealed class NestedTree : IDisposable
    {
        private readonly ChildProcess _root;
        private readonly List<int> _adopted = [];
        private readonly string _log;

        public int Root => _root.Pid;

        private NestedTree(ChildProcess root, string log) { _root = root; _log = log; }

        public static NestedTree StartPlain(string log)
        {
            var c = ChildProcess.Start(Nestedpids, [log], newSession: true);
            var t = new NestedTree(c, log);
            try
            {
                if (!Poll.Until(() => Lines(log).Contains("ready"), 30_000)) throw new InvalidOperationException("nestedpids never became ready");
                t._adopted.Add(Children(c.Pid).Single());  // n1: it outlives the root
            }
            catch { t.Dispose(); throw; }
            return t;
        }

        public void Adopt(int pid) => _adopted.Add(pid);

        /// <summary>Collects the original root once a dump killed it (its pid is free for the restore then).</summary>
        public void ReapRoot() => _root.WaitExit();

        public void Dispose()
        {
            foreach (int pid in _adopted)
                if (Poll.ReadFile($"/proc/{pid}/cmdline").Contains(_log, StringComparison.Ordinal)) LibC.kill(pid, LibC.SIGKILL);
            _root.Dispose();
        }
    }
}
