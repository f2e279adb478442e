using System.Diagnostics;
using System.Globalization;
using Crisp.Integration.Tests.Support;
using Crisp.Native;
using Crisp.TestSupport;
using Xunit;
using static Crisp.Integration.Tests.Remote.RemoteUtil;
using NsTree = Crisp.Integration.Tests.Namespaces.PidNamespaceTests.NsTree;

namespace Crisp.Integration.Tests.Namespaces;

/// <summary>
/// Trees that own an IPC namespace (SysV shared memory with an attachment, semaphores, message
/// queues) or a time namespace (clock offsets), inside their own pid namespace: dumped in
/// CRIU's images, restored into new namespaces of those kinds.
/// </summary>
public class IpcAndTimeNamespaceTests
{
    private static readonly Lazy<TempDir> BinDir = new(() =>
    {
        var d = new TempDir();
        AppDomain.CurrentDomain.ProcessExit += (_, _) => d.Dispose();
        return d;
    });
    private static readonly Lazy<string> IpcnsPath = new(() =>
        Gcc.Compile(BinDir.Value, "ipcns", File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "workloads", "ipcns.c")), "-O2"));

    private const int ShmKey = 0x5eed;

    [Fact]
    public void Sysv_shm_contents_and_attachment_semaphores_and_messages_of_its_ipc_namespace_survive_with_their_ids()
    {
        using var dir = new TempDir();
        string log = dir["ipc.log"];
        using var tree = NsTree.Start(["--ipc", "--mount-proc"], $"exec /usr/bin/setsid {IpcnsPath.Value} {log}", () => Lines(log).Contains("ready"));
        string before = Lines(log).Single(l => l.StartsWith("report", StringComparison.Ordinal));
        Assert.Contains(" nattch=1 maps=1 shared=1 sem=", before);
        Assert.Contains(":7,0,42 msg=", before);

        var d = CrispCli.Run(dir, "dump", "-t", S(tree.Root), "-D", dir["img"]);
        Assert.True(d.ExitCode == 0, d.ToString());
        // CRIU's images, as crit reads them.
        var shm = Crit.DecodeNode(Directory.GetFiles(dir["img"], "ipcns-shm-*.img").Single())["entries"]!.AsArray().Single()!;
        Assert.Equal(ShmKey, (int)shm["desc"]!["key"]!);
        Assert.Equal(3 * 4096 + 100, (int)shm["size"]!);
        Assert.True(File.Exists(Path.Combine(dir["img"], $"pagemap-shmem-{(int)shm["desc"]!["id"]!}.img")));
        var sem = Crit.DecodeNode(Directory.GetFiles(dir["img"], "ipcns-sem-*.img").Single())["entries"]!.AsArray().Single()!;
        Assert.Equal([7, 0, 42], sem["extra"]!.AsArray().Select(v => (int)v!));
        var msg = Crit.DecodeNode(Directory.GetFiles(dir["img"], "ipcns-msg-*.img").Single())["entries"]!.AsArray().Single()!;
        Assert.Equal(3, (int)msg["qnum"]!);
        Assert.Single(Directory.GetFiles(dir["img"], "ipcns-var-*.img"));
        Assert.False(HostHasShmKey(), "the tree's segment is in the host's IPC namespace");

        var r = CrispCli.Run(dir, "restore", "-D", dir["img"], "-d", "--pidfile", dir["pid"]);
        Assert.True(r.ExitCode == 0, r.ToString());
        int restored = int.Parse(File.ReadAllText(dir["pid"]), CultureInfo.InvariantCulture);
        tree.Adopt(restored);
        Assert.NotEqual(LibC.Stat("/proc/self/ns/ipc").st_ino, LibC.Stat($"/proc/{restored}/ns/ipc").st_ino);

        int n = Lines(log).Length;
        Errno.Check(LibC.kill(restored, LibC.SIGUSR1), "kill", $"{restored}, SIGUSR1");
        Assert.True(Poll.Until(() => Lines(log).Skip(n).Any(l => l.StartsWith("report", StringComparison.Ordinal)), 10_000),
            $"the restored process did not report:\n{string.Join('\n', Lines(log))}");
        // Same ids, same bytes through the same (restored) attachment, one attachment, the same values and messages.
        Assert.Equal(before, Lines(log).Skip(n).First(l => l.StartsWith("report", StringComparison.Ordinal)));
        Assert.False(HostHasShmKey(), "the restored segment is in the host's IPC namespace");
    }

    [Fact]
    public void Clock_monotonic_and_boottime_of_its_time_namespace_neither_go_back_nor_jump_by_more_than_the_frozen_time()
    {
        using var dir = new TempDir();
        string log = dir["clock.log"];
        const string loop = "import sys, time\nf = open(sys.argv[1], 'a', buffering=1)\nwhile True:\n" +
                            "    f.write('%.6f %.6f\\n' % (time.clock_gettime(time.CLOCK_MONOTONIC), time.clock_gettime(time.CLOCK_BOOTTIME)))\n    time.sleep(0.05)\n";
        File.WriteAllText(dir["clock.py"], loop);
        using var tree = NsTree.Start(["--time", "--monotonic", "100000", "--boottime", "200000", "--mount-proc"],
            $"exec /usr/bin/setsid /usr/bin/python3 {dir["clock.py"]} {log}", () => Lines(log).Length >= 2);
        // The offsets are in place: inside is far ahead of the host's clocks.
        Assert.True(Clocks(Lines(log)[^1]).Mono > HostSeconds() + 99_000, Lines(log)[^1]);

        double t0 = HostSeconds();
        var d = CrispCli.Run(dir, "dump", "-t", S(tree.Root), "-D", dir["img"]);
        Assert.True(d.ExitCode == 0, d.ToString());
        var timens = Crit.DecodeNode(Directory.GetFiles(dir["img"], "timens-*.img").Single())["entries"]![0]!;
        Assert.True((long)timens["monotonic"]!["tv_sec"]! > 100_000);
        Assert.True((long)timens["boottime"]!["tv_sec"]! > 200_000);
        var last = Clocks(Lines(log)[^1]);
        int n = Lines(log).Length;

        var r = CrispCli.Run(dir, "restore", "-D", dir["img"], "-d", "--pidfile", dir["pid"]);
        Assert.True(r.ExitCode == 0, r.ToString());
        tree.Adopt(int.Parse(File.ReadAllText(dir["pid"]), CultureInfo.InvariantCulture));
        Assert.True(Poll.Until(() => Lines(log).Length > n, 10_000), "the restored loop does not print");
        double frozen = HostSeconds() - t0;
        var first = Clocks(Lines(log)[n]);
        // The line before the dump was written up to one period (0.05 s) before t0.
        Assert.True(first.Mono >= last.Mono && first.Mono - last.Mono <= frozen + 0.1,
            $"CLOCK_MONOTONIC {last.Mono:F6} before, {first.Mono:F6} after, {frozen:F3} s frozen");
        Assert.True(first.Boot >= last.Boot && first.Boot - last.Boot <= frozen + 0.1,
            $"CLOCK_BOOTTIME {last.Boot:F6} before, {first.Boot:F6} after, {frozen:F3} s frozen");
        Assert.True(Poll.Until(() => Lines(log).Length > n + 3, 10_000), "the restored loop stops");
        var lines = Lines(log).Skip(n - 1).Select(Clocks).ToList();
        Assert.All(lines.Zip(lines.Skip(1)), p => Assert.True(p.Second.Mono >= p.First.Mono, "CLOCK_MONOTONIC went back"));
    }

    [Criu4Fact]
    public void Crisp_dump_of_ipc_and_time_namespaces_restores_with_criu4_and_criu4_dump_with_crisp()
    {
        using var dir = new TempDir();
        string log = dir["ipc.log"];
        // No mount namespace: crisp writes no mount images, which CRIU would need for one.
        using var tree = NsTree.Start(["--ipc", "--time", "--monotonic", "100000"], $"exec /usr/bin/setsid {IpcnsPath.Value} {log}", () => Lines(log).Contains("ready"));
        string before = Lines(log).Single(l => l.StartsWith("report", StringComparison.Ordinal));
        var d = CrispCli.Run(dir, "dump", "-t", S(tree.Root), "-D", dir["img"]);
        Assert.True(d.ExitCode == 0, d.ToString());
        var (code, _) = Criu4.Run(TimeSpan.FromSeconds(60), "restore", "-D", dir["img"], "-d", "-o", "restore.log", "--pidfile", dir["pid"]);
        Assert.True(code == 0, $"criu4 restore: exit {code}: {Criu4.Errors(Path.Combine(dir["img"], "restore.log"))}");
        int byCriu = int.Parse(File.ReadAllText(dir["pid"]).Trim(), CultureInfo.InvariantCulture);
        tree.Adopt(byCriu);
        Assert.Equal(before, Report(log, byCriu));
        Assert.True(MonotonicOffset(byCriu) > 99_000);

        Directory.CreateDirectory(dir["img2"]);
        var (dumped, _) = Criu4.Run(TimeSpan.FromSeconds(60), "dump", "-t", S(byCriu), "-D", dir["img2"], "-o", "dump.log");
        Assert.True(dumped == 0, $"criu4 dump: exit {dumped}: {Criu4.Errors(Path.Combine(dir["img2"], "dump.log"))}");
        var r = CrispCli.Run(dir, "restore", "-D", dir["img2"], "-d", "--pidfile", dir["pid2"]);
        Assert.True(r.ExitCode == 0, r.ToString());
        int byCrisp = int.Parse(File.ReadAllText(dir["pid2"]), CultureInfo.InvariantCulture);
        tree.Adopt(byCrisp);
        Assert.Equal(before, Report(log, byCrisp));
        Assert.True(MonotonicOffset(byCrisp) > 99_000);
        Assert.False(HostHasShmKey(), "a restored segment is in the host's IPC namespace");
    }

    /// <summary>SIGUSR1 to a restored ipcns; the report line it writes then.</summary>
    private static string Report(string log, int pid)
    {
        int n = Lines(log).Length;
        Errno.Check(LibC.kill(pid, LibC.SIGUSR1), "kill", $"{pid}, SIGUSR1");
        Assert.True(Poll.Until(() => Lines(log).Skip(n).Any(l => l.StartsWith("report", StringComparison.Ordinal)), 10_000),
            $"the restored process did not report:\n{string.Join('\n', Lines(log))}");
        return Lines(log).Skip(n).First(l => l.StartsWith("report", StringComparison.Ordinal));
    }

    /// <summary>Seconds of the CLOCK_MONOTONIC offset of <paramref name="pid"/>'s time namespace.</summary>
    private static long MonotonicOffset(int pid) =>
        long.Parse(File.ReadAllLines($"/proc/{pid}/timens_offsets").First(l => l.StartsWith("monotonic", StringComparison.Ordinal))
            .Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture);

    private static (double Mono, double Boot) Clocks(string line)
    {
        var f = line.Split(' ');
        return (double.Parse(f[0], CultureInfo.InvariantCulture), double.Parse(f[1], CultureInfo.InvariantCulture));
    }

    /// <summary>The host's CLOCK_MONOTONIC (Stopwatch reads it on Linux), in seconds.</summary>
    private static double HostSeconds() => Stopwatch.GetTimestamp() / (double)Stopwatch.Frequency;

    private static bool HostHasShmKey() =>
        File.ReadAllLines("/proc/sysvipc/shm").Skip(1).Any(l => l.Split(' ', StringSplitOptions.RemoveEmptyEntries)[0] == ShmKey.ToString(CultureInfo.InvariantCulture));

    private static string[] Lines(string path) => Poll.ReadFile(path).Split('\n', StringSplitOptions.RemoveEmptyEntries);
}
