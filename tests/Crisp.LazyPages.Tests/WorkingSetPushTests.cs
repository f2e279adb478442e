using Crisp.Images.Pages;
using Crisp.LazyPages;
using Crisp.Native;
using Crisp.TestSupport;
using static Crisp.TestSupport.TestProcesses;

namespace Crisp.LazyPages.Tests;

/// <summary>
/// Working-set prefetch in process (Prefetch/WorkingSet.cs): a run records the order of its
/// faults; a second run with that order gets those pages pushed before restore-finished, in
/// that order, so reading them takes no fault.
/// </summary>
public sealed unsafe class WorkingSetPushTests : IDisposable
{
    private const int PageSize = 4096;
    private const long Pages = 4096; // 16 MiB
    private static readonly long[] Touched = [3001, 17, 2222, 4000, 640];
    private readonly string _dir = TempDir("wspush");

    public void Dispose() => Directory.Delete(_dir, true);

    /// <param name="prefetchOrder">the order file to push, given where the region landed this time; null: none</param>
    private static void Run(Func<ulong, string?> prefetchOrder, string? recordOrder, Action<RunningDaemon, nint> beforeFinished)
    {
        nint region = LibC.mmap(0, (nuint)(Pages * PageSize), LibC.PROT_READ | LibC.PROT_WRITE, LibC.MAP_PRIVATE | LibC.MAP_ANONYMOUS, -1, 0);
        Assert.NotEqual(LibC.MAP_FAILED, region);
        ulong b = (ulong)region;
        try
        {
            int uffd = InProcessClient.MakeUffd(b, (ulong)(Pages * PageSize));
            int pid = LibC.getpid();
            var plan = new LazyPlan(pid, [new LazyVma(b, b + (ulong)(Pages * PageSize))], [new PageRange(b, (ulong)Pages)]);
            using var d = new RunningDaemon(Pattern.Source(), p => p == pid ? plan : throw new InvalidOperationException($"unexpected pid {p}"),
                prefetchOrder: prefetchOrder(b), recordOrder: recordOrder);
            using var s = InProcessClient.HandOver(d.SocketPath, pid, uffd);
            LibC.close(uffd);
            beforeFinished(d, region);
            InProcessClient.SendFinished(s);
            Assert.Null(InProcessClient.ReadAndCheck(region, 0, Pages, _ => false, TimeSpan.FromSeconds(60)));
            Assert.True(d.WaitExit(TimeSpan.FromSeconds(30)), "daemon did not exit\n" + d.LogText);
            Assert.Null(d.Crash);
            Assert.Equal(0, d.ExitCode);
        }
        finally
        {
            LibC.munmap(region, (nuint)(Pages * PageSize));
        }
    }

    [Fact]
    public void Recorded_faults_are_pushed_first_next_time_before_restore_finished()
    {
        string order = Path.Combine(_dir, WorkingSet.FileName);
        ulong b0 = 0;
        Run(_ => null, order, (d, region) =>
        {
            b0 = (ulong)region;
            foreach (long k in Touched) Assert.Null(InProcessClient.ReadAndCheck(region, k, k + 1, _ => false, TimeSpan.FromSeconds(20)));
            Assert.Equal(Touched.Length, d.Daemon.Stats.Faults);
        });
        // in fault order, each the aligned fault-around block (16 pages) of the page read; then the faults of
        // the full read after restore-finished (the prefetch got the rest)
        var recorded = WorkingSet.Read(order)[LibC.getpid()];
        Assert.True(recorded.Count >= Touched.Length, $"{recorded.Count} ranges recorded");
        recorded = recorded.Take(Touched.Length).ToList();
        for (int i = 0; i < Touched.Length; i++)
        {
            ulong at = b0 + (ulong)(Touched[i] * PageSize);
            Assert.True(recorded[i].Start <= at && at < recorded[i].End, $"range {i} {recorded[i].Start:x}-{recorded[i].End:x} misses page {Touched[i]}");
        }

        // The region is mapped again, perhaps elsewhere: the recording names pages where they were, so it is moved
        // to the new place here (a restore puts the pages back where the dump found them).
        Run(b => Rebased(recorded, b0, b), null, (d, region) =>
        {
            long want = Touched.Length * 16;
            Assert.True(Poll.Until(() => d.Daemon.Stats.WorkingSetPages >= want && d.Daemon.Stats.PrefetchPages >= want, 20_000),
                $"working set not pushed before restore-finished: {d.Daemon.Stats}");
            Assert.Equal(want, d.Daemon.Stats.PrefetchPages); // the working set only: the rest waits for restore-finished
            foreach (long k in Touched) Assert.Null(InProcessClient.ReadAndCheck(region, k, k + 1, _ => false, TimeSpan.FromSeconds(20)));
            Assert.Equal(0, d.Daemon.Stats.Faults);
        });
    }

    /// <summary>An order file holding <paramref name="ranges"/> moved from <paramref name="from"/> to <paramref name="to"/>.</summary>
    private string Rebased(List<(ulong Start, ulong End)> ranges, ulong from, ulong to)
    {
        string path = Path.Combine(_dir, "rebased");
        IReadOnlyList<(ulong, ulong)> moved = ranges.Select(r => (r.Start - from + to, r.End - from + to)).ToList();
        WorkingSet.Write(path, [(LibC.getpid(), moved)]);
        return path;
    }
}
