using Crisp.TestSupport;
using System.Diagnostics;
using Crisp.Checkpoint.Dump;
using Crisp.Checkpoint.Restore;
using Crisp.Native;
using Xunit;
using Xunit.Abstractions;
using static Crisp.TestSupport.TestProcesses;

namespace Crisp.Integration.Tests.Restore;

/// <summary>
/// Private pages a parent and its child share copy-on-write after fork stay shared after the
/// restore (RestoreCow.cs): the same physical page in both pagemaps, while the pages either
/// process wrote or dropped are its own; both processes check their own bytes all along.
/// </summary>
public sealed class CowRestoreTests(ITestOutputHelper output) : LiveProcessTest("cow")
{
    private const int Pages = 16;
    private static readonly int[] Differ = [3, 5, 7];

    /// <summary>The pagemap entries (PFN and flags) of the workload's pages in <paramref name="pid"/>.</summary>
    private static ulong[] Pagemap(int pid, ulong addr)
    {
        var raw = new byte[Pages * 8];
        using (var f = File.OpenRead($"/proc/{pid}/pagemap"))
        {
            f.Seek((long)(addr / 4096 * 8), SeekOrigin.Begin);
            f.ReadExactly(raw);
        }
        return Enumerable.Range(0, Pages).Select(i => BitConverter.ToUInt64(raw, i * 8)).ToArray();
    }

    private static List<int> Shared(ulong[] a, ulong[] b) =>
        Enumerable.Range(0, Pages).Where(i => a[i] == b[i] && (a[i] & (1UL << 63)) != 0).ToList();

    [Fact]
    public unsafe void Pages_a_child_shares_with_its_parent_stay_shared_and_the_written_ones_stay_apart()
    {
        string bin = Gcc.Workload("cowpages");
        string log = Path.Combine(Dir, "log");
        int pid = SpawnLogged(log, bin);
        Pids.Add(pid);
        ulong addr = Convert.ToUInt64(WaitForLine(log, l => l.StartsWith("addr "))["addr 0x".Length..], 16);
        int child = int.Parse(WaitForLine(log, l => l.StartsWith("child "))["child ".Length..]);
        Pids.Add(child);
        WaitForLine(log, l => l == "ok c 1");
        WaitForLine(log, l => l == "ok p 1");
        var expected = Enumerable.Range(0, Pages).Except(Differ).ToList();
        Assert.Equal(expected, Shared(Pagemap(pid, addr), Pagemap(child, addr)));

        string images = Path.Combine(Dir, "img");
        Dumper.Dump(new DumpOptions { Pid = pid, ImagesDir = images });
        int st;
        LibC.waitpid(pid, &st, 0);
        var sw = Stopwatch.StartNew();
        while (Directory.Exists($"/proc/{child}") && sw.ElapsedMilliseconds < 3000) Thread.Sleep(5);

        int before = Lines(log).Length;
        var r = Restorer.Restore(new RestoreOptions { ImagesDir = images });
        output.WriteLine($"restored {string.Join(", ", r.Pids)} in {r.Elapsed.TotalMilliseconds:F1} ms");
        Assert.Equal([pid, child], r.Pids);
        long lastP = Lines(log).Take(before).Where(l => l.StartsWith("ok p ")).Select(l => long.Parse(l[5..])).Last();
        long lastC = Lines(log).Take(before).Where(l => l.StartsWith("ok c ")).Select(l => long.Parse(l[5..])).Last();
        WaitForLine(log, l => l == $"ok p {lastP + 3}", skip: before);
        WaitForLine(log, l => l == $"ok c {lastC + 3}", skip: before);
        Assert.DoesNotContain(Lines(log), l => l.StartsWith("bad "));
        Assert.Equal(expected, Shared(Pagemap(pid, addr), Pagemap(child, addr)));
    }
}
