using Crisp.Checkpoint.Cpu;
using Crisp.Checkpoint.Dump;
using Crisp.Checkpoint.Restore;
using Crisp.Images;
using Crisp.Integration.Tests.Support;
using Crisp.Native;
using Crisp.TestSupport;
using Xunit;

namespace Crisp.Integration.Tests.Restore;

/// <summary>The CPU record of a dump (cpuinfo.img) against the CPU that restores it (CRIU's --cpu-cap).</summary>
public sealed class CpuCheckTests
{
    private static (TempDir Dir, Memtouch W, ImageDir Img) Dumped()
    {
        var dir = new TempDir();
        Memtouch? w = null;
        try
        {
            w = new Memtouch(dir, mib: 8);
            Directory.CreateDirectory(dir["img"]);
            Dumper.Dump(new DumpOptions { Pid = w.Pid, ImagesDir = dir["img"] });
            w.Reap();
            return (dir, w, new ImageDir(dir["img"]));
        }
        catch
        {
            // The caller's using never gets them: nothing is left behind.
            w?.Dispose();
            dir.Dispose();
            throw;
        }
    }

    [Fact]
    public void A_dump_records_this_cpu_and_crit_decodes_it()
    {
        var (dir, w, img) = Dumped();
        using (dir) using (w)
        {
            var cpu = Assert.Single(img.ReadCpuinfo().X86Entry);
            var host = CpuFeatures.Host();
            Assert.Equal(host.Capability, cpu.Capability);
            Assert.Equal(CpuFeatures.Words, cpu.Capability.Count);
            Assert.Equal(host.XfeaturesMask, cpu.XfeaturesMask);
            Assert.Contains("sse2", CpuFeatures.InstructionNames(cpu));
            Assert.True((cpu.XfeaturesMask & 3) == 3, "x87 and SSE state are always there");
            Assert.NotNull(Crit.DecodeNode(Path.Combine(dir["img"], ImageDir.CpuinfoName)));
        }
    }

    [Fact]
    public void A_dump_from_a_cpu_with_fewer_features_restores()
    {
        var (dir, w, img) = Dumped();
        using (dir) using (w)
        {
            var info = img.ReadCpuinfo();
            string present = CpuFeatures.InstructionNames(info.X86Entry[0]).Last();
            Assert.True(CpuFeatures.SetInstruction(info.X86Entry[0], present, on: false));
            img.WriteCpuinfo(info);

            var r = Restorer.Restore(new RestoreOptions { ImagesDir = dir["img"] });
            w.Adopt(r.Pid);
            Assert.StartsWith("check ok", w.Check(r.Pid));
        }
    }

    [Fact]
    public void A_dump_from_a_cpu_with_a_feature_this_one_lacks_is_refused_and_nothing_is_left()
    {
        var (dir, w, img) = Dumped();
        using (dir) using (w)
        {
            var info = img.ReadCpuinfo();
            var host = CpuFeatures.Host();
            string missing = CpuFeatures.AllInstructionNames.Except(CpuFeatures.InstructionNames(host)).First();
            Assert.True(CpuFeatures.SetInstruction(info.X86Entry[0], missing, on: true));
            img.WriteCpuinfo(info);

            var e = Assert.Throws<CrispException>(() => Restorer.Restore(new RestoreOptions { ImagesDir = dir["img"] }));
            Assert.Contains(missing, e.Message);
            Assert.Contains("instruction sets missing", e.Message);
            Assert.False(Directory.Exists($"/proc/{w.Pid}"), "a refused restore left the process behind");

            // CRIU's --cpu-cap=none: the user takes the risk, the restore goes on.
            var r = Restorer.Restore(new RestoreOptions { ImagesDir = dir["img"], CpuCap = CpuCap.None });
            w.Adopt(r.Pid);
            Assert.StartsWith("check ok", w.Check(r.Pid));
        }
    }

    [Fact]
    [Trait("Category", "Unit")]
    public void Cpu_cap_follows_criu_syntax()
    {
        Assert.Equal(CpuCap.All, CpuFeatures.Parse(null));
        Assert.Equal(CpuCap.Fpu, CpuFeatures.Parse("fpu"));
        Assert.Equal(CpuCap.Fpu | CpuCap.Cpu, CpuFeatures.Parse("all,^ins"));
        Assert.Equal(CpuCap.None, CpuFeatures.Parse("none"));
        Assert.Equal(CpuCap.All, CpuFeatures.Parse("^none"));
        Assert.Throws<CrispException>(() => CpuFeatures.Parse("avx"));
    }
}
