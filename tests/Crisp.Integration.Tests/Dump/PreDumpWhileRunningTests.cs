using System.Globalization;
using Crisp.Checkpoint.Dump;
using Crisp.Checkpoint.Restore;
using Crisp.Integration.Tests.Support;
using Crisp.TestSupport;
using Xunit;
using Xunit.Abstractions;
using static Crisp.Integration.Tests.Remote.RemoteUtil;

namespace Crisp.Integration.Tests.Dump;

/// <summary>
/// A pre-dump copies its pages after the tree runs again (Dumper.PreDump.cs). A dirtier that
/// rewrites its whole memory several times a second writes many pages while that copy reads
/// them: the copy of such a page may be torn or stale, and only the write tracking, re-armed
/// before the thaw, makes the next dump carry it again. Every page of the restored process is
/// checked by the process itself against its generation, so a single page taken from a
/// pre-dump copy older than its last write fails the check.
/// </summary>
public sealed class PreDumpWhileRunningTests(ITestOutputHelper output)
{
    private const int Mib = 256;

    /// <summary>
    /// Page writes the dirtier reported in tick and progress lines stamped within [from, to]
    /// (CLOCK_REALTIME ns): a progress line every 1024 writes, so a tick slowed by write faults
    /// still shows its writes.
    /// </summary>
    private static long WritesBetween(Dirtier w, long from, long to)
    {
        var ticks = w.Lines().Where(l => (l.StartsWith("tick ", StringComparison.Ordinal) || l.StartsWith("progress ", StringComparison.Ordinal)) && l.Contains(" written=", StringComparison.Ordinal))
            .Select(l => l.Split(' '))
            .Select(p => (Ns: long.Parse(p[2], CultureInfo.InvariantCulture), Written: long.Parse(p[3]["written=".Length..], CultureInfo.InvariantCulture)))
            .ToList();
        var inside = ticks.Where(t => t.Ns >= from && t.Ns <= to).ToList();
        return inside.Count < 2 ? 0 : inside[^1].Written - inside[0].Written;
    }

    [Fact]
    public void Pages_written_while_a_pre_dump_copies_them_are_not_lost()
    {
        using var dir = new TempDir();
        // 1000%/s: a tenth of the memory every 10 ms tick, while the copy of 256 MiB takes tens of ms or more.
        using var w = new Dirtier(dir, Mib, percentPerSecond: 1000);
        var pre1 = Dumper.PreDump(new DumpOptions { Pid = w.Pid, ImagesDir = dir["pre1"], LeaveRunning = true, TrackMem = true });
        long copied1 = DumpResult.UnixNowNs();
        var pre2 = Dumper.PreDump(new DumpOptions { Pid = w.Pid, ImagesDir = dir["pre2"], LeaveRunning = true, TrackMem = true, PrevImagesDir = "../pre1" });
        long copied2 = DumpResult.UnixNowNs();
        output.WriteLine($"pre1: {pre1.PagesWritten} pages, frozen {pre1.Frozen.TotalMilliseconds:F1} ms of {pre1.Total.TotalMilliseconds:F1} ms; " +
                         $"pre2: {pre2.PagesWritten} pages, {pre2.ParentPages} in pre1, frozen {pre2.Frozen.TotalMilliseconds:F1} ms of {pre2.Total.TotalMilliseconds:F1} ms");
        Assert.True(pre1.PagesWritten >= Mib * 256UL, $"pre1 wrote {pre1.PagesWritten} pages");
        // The copies overlapped the workload's writes: otherwise this test would not test anything.
        long during = WritesBetween(w, pre1.ResumedUnixNs, copied1) + WritesBetween(w, pre2.ResumedUnixNs, copied2);
        output.WriteLine($"page writes while the pre-dumps copied: {during}");
        Assert.True(during > 0, "the dirtier wrote nothing while the pre-dumps copied its pages");
        // The process ran between the thaw and the end of the copy: it was not frozen for the copy.
        Assert.True(pre1.ResumedUnixNs < copied1 && pre1.ResumedUnixNs > pre1.FreezeStartUnixNs);

        var r0 = CrispCli.Run(dir, "dump", "-t", S(w.Pid), "-D", dir["img"], "--prev-images-dir", "../pre2", "--track-mem", "-o", "dump.log", "-v4");
        Assert.True(r0.ExitCode == 0, r0.ToString());
        w.Reap();
        var r = Restorer.Restore(new RestoreOptions { ImagesDir = dir["img"] });
        w.Adopt(r.Pid);
        Assert.StartsWith("check ok", w.Check(r.Pid));
    }
}
