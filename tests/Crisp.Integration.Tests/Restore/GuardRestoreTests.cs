using Crisp.Checkpoint.Dump;
using Crisp.Checkpoint.Restore;
using Crisp.Images;
using Crisp.Images.Proto;
using Crisp.Integration.Tests.Lazy;
using Crisp.Native;
using Xunit;
using static Crisp.TestSupport.TestProcesses;

namespace Crisp.Integration.Tests.Restore;

/// <summary>
/// Guard regions (tests/workloads/guardpages.c, MADV_GUARD_INSTALL): dumped as CRIU's
/// VMA_AREA_GUARD pseudo-VMAs and installed again, eagerly and lazily (a lazy VMA with guards
/// inside must not have its guards filled by the daemon); judged by the program: the guarded
/// pages still fault, the others keep their bytes.
/// </summary>
public sealed class GuardRestoreTests() : LiveProcessTest("guards")
{
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public unsafe void Guarded_pages_still_fault_and_the_rest_keep_their_bytes(bool lazy)
    {
        string bin = Gcc.Workload("guardpages");
        string log = Path.Combine(Dir, "log");
        int pid = SpawnLogged(log, bin);
        Pids.Add(pid);
        // A kernel without MADV_GUARD_INSTALL (before 6.13) prints "skip": this test then fails rather than pass unchecked.
        Assert.Equal("ready", WaitForLine(log, l => l == "ready" || l.StartsWith("skip") || l.StartsWith("BAD")));

        string images = Path.Combine(Dir, "img");
        Dumper.Dump(new DumpOptions { Pid = pid, ImagesDir = images });
        int st;
        LibC.waitpid(pid, &st, 0);
        var guards = new ImageDir(images).ReadMm(pid).Vmas.Where(v => (v.Status & VmaStatus.VMA_AREA_GUARD) != 0).ToList();
        Assert.Equal(2, guards.Count);
        Assert.Equal([2UL * LibC.PageSize, 1UL * LibC.PageSize], guards.Select(g => g.End - g.Start));

        using var daemon = lazy ? new LazyDaemon(images, Dir) : null;
        int n = Lines(log).Length;
        Restorer.Restore(new RestoreOptions { ImagesDir = images, Detached = true, Lazy = lazy });
        LibC.kill(pid, LibC.SIGUSR1);
        Assert.Equal("check ok", WaitForLine(log, l => l.StartsWith("check ") || l.StartsWith("BAD "), skip: n, timeoutMs: 30000));
        if (daemon != null) Assert.Equal(0, daemon.WaitExit());
    }
}
