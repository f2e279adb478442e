using Crisp.TestSupport;
using Crisp.Checkpoint.Dump;
using Crisp.Checkpoint.Restore;
using Crisp.Images;
using Crisp.Images.Proto;
using Crisp.Native;
using Crisp.Native.ProcFs;
using Xunit;
using static Crisp.TestSupport.TestProcesses;

namespace Crisp.Integration.Tests.Restore;

/// <summary>
/// The vDSO proxy: a restore onto a kernel whose vDSO differs keeps the dumped vDSO's code
/// with its entry points jumping into this kernel's. ForceVdsoProxy takes that path on any
/// machine; the CRIU reference images (another kernel build) take it for real.
/// </summary>
public sealed class VdsoRestoreTests() : LiveProcessTest("vdso")
{
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public unsafe void Cached_vdso_pointers_give_correct_time_after_a_forced_proxy_restore(bool lazy)
    {
        string bin = Gcc.Workload("vdsocache"), log = Path.Combine(Dir, "log"), images = Path.Combine(Dir, "img");
        int pid = SpawnLogged(log, bin, log);
        Pids.Add(pid);
        var ready = WaitForLine(log, l => l.StartsWith("ready "));
        Assert.EndsWith("selftest-ok", ready);
        WaitForLine(log, l => l == "tick 3");
        Directory.CreateDirectory(images);
        Dumper.Dump(new DumpOptions { Pid = pid, ImagesDir = images });
        int st;
        LibC.waitpid(pid, &st, 0);
        var mm = new ImageDir(images).ReadMm(pid);
        var dumpedVdso = mm.Vmas.Single(v => (v.Status & VmaStatus.VMA_AREA_VDSO) != 0);

        RestoredProcess r;
        if (lazy)
        {
            using var daemon = new Crisp.Integration.Tests.Lazy.LazyDaemon(images, Dir);
            r = Restorer.Restore(new RestoreOptions { ImagesDir = images, Lazy = true, ForceVdsoProxy = true });
            Pids.Add(r.Pid);
            Assert.Equal(0, daemon.WaitExit());
        }
        else
        {
            r = Restorer.Restore(new RestoreOptions { ImagesDir = images, ForceVdsoProxy = true });
            Pids.Add(r.Pid);
        }

        var maps = Proc.Maps(r.Pid);
        // The dumped vDSO's address holds the proxy (an anonymous r-x copy), the kernel's [vdso] sits elsewhere.
        var atDumped = maps.Single(v => v.Start == dumpedVdso.Start);
        Assert.False(atDumped.IsVdso, $"0x{dumpedVdso.Start:x} is still the kernel's [vdso]: the proxy path did not run");
        Assert.Equal(LibC.PROT_READ | LibC.PROT_EXEC, atDumped.Prot);
        var vdso = maps.Single(v => v.IsVdso);
        Assert.NotEqual(dumpedVdso.Start, vdso.Start);
        Assert.DoesNotContain(mm.Vmas, v => v.Start < vdso.End && vdso.Start < v.End && (v.Status & VmaStatus.VMA_AREA_VSYSCALL) == 0);

        int before = Lines(log).Length;
        WaitForLine(log, l => l.StartsWith("tick "), skip: before);
        LibC.kill(r.Pid, LibC.SIGUSR1);
        var verdict = WaitForLine(log, l => l.StartsWith("vdso "), skip: before);
        Assert.StartsWith("vdso ok", verdict);
    }
}
