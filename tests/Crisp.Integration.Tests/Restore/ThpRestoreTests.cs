using Crisp.Checkpoint.Dump;
using Crisp.Checkpoint.Restore;
using Crisp.Integration.Tests.Lazy;
using Crisp.Native;
using Xunit;
using static Crisp.TestSupport.TestProcesses;

namespace Crisp.Integration.Tests.Restore;

/// <summary>
/// Transparent huge pages across an eager restore (tests/workloads/thpregions.c): a
/// MADV_HUGEPAGE region comes back backed by huge pages (the flag is set on the VMA before its
/// pages are written, so the kernel's faults while crisp writes allocate 2 MiB pages), a
/// MADV_NOHUGEPAGE region stays in 4 KiB pages, both keep their flags and every word. A lazy
/// restore keeps the flags, the words and the small pages; its MADV_HUGEPAGE region comes back
/// in 4 KiB pages (UFFDIO_COPY has no huge-page mode; docs/LAZY-PAGES.md).
/// </summary>
public sealed class ThpRestoreTests() : LiveProcessTest("thp")
{
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void A_hugepage_region_comes_back_huge_and_a_nohugepage_region_small_with_the_same_bytes(bool lazy)
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
        using var daemon = lazy ? new LazyDaemon(images, Dir) : null;
        Restorer.Restore(new RestoreOptions { ImagesDir = images, Detached = true, Lazy = lazy });

        var (hugeKb, _) = Smaps(pid, huge);
        var (smallKb, _) = Smaps(pid, small);
        if (!lazy) Assert.True(hugeKb > 0, $"MADV_HUGEPAGE region restored without huge pages (AnonHugePages {hugeKb} kB, {hugeKb0} kB before the dump)");
        Assert.Equal(0, smallKb);
        LibC.kill(pid, LibC.SIGUSR1);
        Assert.Equal("check ok", WaitForLine(log, l => l.StartsWith("check "), skip: n, timeoutMs: 30000));
        // Flags once the daemon is gone (while it serves, the lazy VMAs are also "um", registered with its uffd).
        if (daemon != null) Assert.Equal(0, daemon.WaitExit());
        Assert.Equal(hugeFlags0, Smaps(pid, huge).Flags);
        var (smallKbEnd, smallFlags) = Smaps(pid, small);
        Assert.Equal(smallFlags0, smallFlags);
        Assert.Equal(0, smallKbEnd);
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
