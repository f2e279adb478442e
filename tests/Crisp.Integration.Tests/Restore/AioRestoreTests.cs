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
/// AIO rings (tests/workloads/aioring.c): a ring whose tail wrapped below its head with events
/// not yet read, and an empty one, dumped and restored eagerly and lazily, then dumped and
/// restored once more from the state the first restore left; judged by the program.
/// </summary>
public sealed class AioRestoreTests(ITestOutputHelper output) : LiveProcessTest("aio")
{
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public unsafe void Rings_keep_head_tail_and_unread_events(bool lazy)
    {
        string bin = Gcc.Workload("aioring");
        string log = Path.Combine(Dir, "log");
        int pid = SpawnLogged(log, bin);
        Pids.Add(pid);
        Assert.Equal("ready head=253 tail=3 nr=255", WaitForLine(log, l => l.StartsWith("ready") || l.StartsWith("BAD")));

        for (int round = 0; round < 2; round++)
        {
            string images = Path.Combine(Dir, $"img{round}");
            Dumper.Dump(new DumpOptions { Pid = pid, ImagesDir = images });
            // The dump ended the process; reaped here when it is this test's child (a restored one may not be).
            int st;
            var sw = System.Diagnostics.Stopwatch.StartNew();
            while (Directory.Exists($"/proc/{pid}") && LibC.waitpid(pid, &st, LibC.WNOHANG) == 0 && sw.ElapsedMilliseconds < 10_000) Thread.Sleep(10);
            while (Directory.Exists($"/proc/{pid}") && sw.ElapsedMilliseconds < 10_000) Thread.Sleep(10);
            Assert.False(Directory.Exists($"/proc/{pid}"), $"process {pid} still there after the dump");
            var mm = new ImageDir(images).ReadMm(pid);
            Assert.Equal(2, mm.Aios.Count);
            Assert.Equal(2, mm.Vmas.Count(v => (v.Status & VmaStatus.VMA_AREA_AIORING) != 0));
            output.WriteLine(Crit.DecodeNode(Path.Combine(images, ImageDir.MmName(pid)))["entries"]![0]!["aios"]!.ToJsonString());

            using var daemon = lazy && round == 0 ? new LazyDaemon(images, Dir) : null;
            int n = Lines(log).Length;
            Restorer.Restore(new RestoreOptions { ImagesDir = images, Detached = true, Lazy = daemon != null });
            Assert.Equal(2, File.ReadAllLines($"/proc/{pid}/maps").Count(l => l.EndsWith("/[aio] (deleted)")));
            LibC.kill(pid, LibC.SIGUSR1);
            Assert.Equal("check ok", WaitForLine(log, l => l.StartsWith("check ") || l.StartsWith("BAD "), skip: n, timeoutMs: 30000));
            Assert.StartsWith("ready ", WaitForLine(log, l => l.StartsWith("ready ") || l.StartsWith("BAD "), skip: n + 1));
            if (daemon != null) Assert.Equal(0, daemon.WaitExit());
        }
    }
}
