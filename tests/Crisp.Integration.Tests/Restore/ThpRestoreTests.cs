using Crisp.Checkpoint.Dump;
using Crisp.Checkpoint.Restore;
using Crisp.Native;
using Xunit;
using static Crisp.TestSupport.TestProcesses;

namespace Crisp.Integration.Tests.Restore;

/// <summary>
/// Transparent huge pages across an eager restore (tests/workloads/thpregions.c): a
/// MADV_HUGEPAGE region comes back backed by huge pages (the flag is set on the VMA before its
/// pages are written, so the kernel's faults while crisp writes allocate 2 MiB pages), a
/// MADV_NOHUGEPAGE region stays in 4 KiB pages, both keep their flags and every word.
/// </summary>
public sealed class ThpRestoreTests() : LiveProcessTest("thp")
{
    [Fact]
    public void A_hugepage_region_comes_back_huge_and_a_nohugepage_region_small_with_the_same_bytes()
    {
        Assert.False(File.ReadAllText("/sys/kernel/mm/transparent_hugepage/enabled").Contains("[never]"),
            "transparent huge pages are disabled on this machine ([never]): nothing to check");
        string bin = Gcc.Workload("thpregions"), log = Path.Combine(Dir, "log"), images = Path.Combine(Dir, "img");
        int pid = Track(SpawnLogged(log, bin));
        var ready = WaitForLine(log, l => l.StartsWith("ready ")).Split(' ');
        ulong huge = Convert.ToUInt64(ready[1], 16), small = Convert.ToUInt64(ready[2], 16);
        var (hugeKb0, hugeFlags0) = Smaps(pid, huge);
        var (smallKb0, smallFlags0) = Smaps(pid, small);
        Assert.True(hugeKb0 > 0, $"the workload itself got no huge pages ({hugeKb0} kB): the check below would prove nothing");
        Assert.Contains("hg", hugeFlags0);
        Assert.Contains("nh", smallFlags0);
        Assert.Equal(0, smallKb0);

        Dumper.Dump(new DumpOptions { Pid = pid, ImagesDir = images });
        Reap(pid);
        int n = Lines(log).Length;
        Restorer.Restore(new RestoreOptions { ImagesDir = images, Detached = true });

        var (hugeKb, hugeFlags) = Smaps(pid, huge);
        var (smallKb, smallFlags) = Smaps(pid, small);
        Assert.True(hugeKb > 0, $"MADV_HUGEPAGE region restored without huge pages (AnonHugePages {hugeKb} kB, {hugeKb0} kB before the dump)");
        Assert.Equal(0, smallKb);
        Assert.Equal(hugeFlags0, hugeFlags);
        Assert.Equal(smallFlags0, smallFlags);
        LibC.kill(pid, LibC.SIGUSR1);
        Assert.Equal("check ok", WaitForLine(log, l => l.StartsWith("check "), skip: n, timeoutMs: 30000));
    }

    /// <summary>AnonHugePages (kB) and VmFlags of the VMA starting at <paramref name="start"/> in /proc/PID/smaps.</summary>
    private static (long Kb, string Flags) Smaps(int pid, ulong start)
    {
        long kb = -1;
        string? flags = null;
        bool inside = false;
        foreach (var line in File.ReadLines($"/proc/{pid}/smaps"))
        {
            int dash = line.IndexOf('-'), space = line.IndexOf(' ');
            if (dash > 0 && space > dash && ulong.TryParse(line.AsSpan(0, dash), System.Globalization.NumberStyles.HexNumber, null, out ulong a))
            {
                if (inside) break;
                inside = a == start;
            }
            else if (inside && line.StartsWith("AnonHugePages:")) kb = long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]);
            else if (inside && line.StartsWith("VmFlags:")) flags = line["VmFlags:".Length..].Trim();
        }
        Assert.True(kb >= 0 && flags != null, $"no VMA at 0x{start:x} in process {pid}");
        return (kb, flags!);
    }
}
