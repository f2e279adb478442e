using System.Globalization;
using Crisp.Checkpoint.Dump;
using Crisp.Checkpoint.Restore;
using Crisp.LazyPages;
using Crisp.Native;
using Xunit;
using Xunit.Abstractions;
using static Crisp.TestSupport.TestProcesses;

namespace Crisp.Integration.Tests.Lazy;

/// <summary>
/// Working-set prefetch (crisp lazy-pages --record-prefetch-order / --prefetch-order): a real
/// process reading a scattered working set after a lazy restore, restored twice from the same
/// images, first recording its fault order, then with the recording beside the images. The
/// second restore must take fewer faults (the daemon's own count); the first-read times are
/// reported, not asserted (the machine is shared).
/// </summary>
public sealed class WorkingSetPrefetchTests : IDisposable
{
    private const int Mib = 64, Pages = 512;
    private readonly ITestOutputHelper _out;
    private readonly string _dir;
    private readonly List<int> _pids = [];
    private readonly List<IDisposable> _daemons = [];

    public WorkingSetPrefetchTests(ITestOutputHelper output)
    {
        _out = output;
        _dir = TempDir("workset");
    }

    public void Dispose()
    {
        foreach (var pid in _pids)
            if (Directory.Exists($"/proc/{pid}")) KillAndReap(pid);
        foreach (var d in _daemons) d.Dispose();
        try { Directory.Delete(_dir, true); } catch (IOException) { }
    }

    private sealed record Run(long Faults, long WorkingSetPages, double ReadMs);

    /// <summary>One lazy restore of the images: the working set read at once, every page delivered, all memory verified, the process ended.</summary>
    private Run RestoreAndRead(string images, string log, string daemonArgs)
    {
        var d = new LazyDaemon(images, _dir, extraArgs: daemonArgs);
        _daemons.Add(d);
        var r = Restorer.Restore(new RestoreOptions { ImagesDir = images, Lazy = true });
        _pids.Add(r.Pid);
        int n = Lines(log).Length;
        LibC.kill(r.Pid, LibC.SIGUSR1);
        string line = WaitForLine(log, l => l.StartsWith("workset "), skip: n, timeoutMs: 60_000);
        Assert.StartsWith("workset ok", line);
        int rc = d.WaitExit(120_000);
        _out.WriteLine(d.Stderr);
        Assert.True(rc == 0, $"lazy-pages exit {rc}: {d.Stderr}");
        Assert.Equal(0, d.Stat("poisoned_pages"));
        var run = new Run(d.Stat("faults"), d.Stat("working_set_pages"),
            long.Parse(line.Split("read_ns=")[1].Split(' ')[0], CultureInfo.InvariantCulture) / 1e6);
        // every word of the memory is what the process wrote before the dump
        n = Lines(log).Length;
        LibC.kill(r.Pid, LibC.SIGUSR2);
        Assert.Equal("check ok", WaitForLine(log, l => l.StartsWith("check "), skip: n, timeoutMs: 60_000));
        Assert.Equal(0, r.WaitForExit());
        _pids.Remove(r.Pid);
        _out.WriteLine($"{daemonArgs}: {run}");
        return run;
    }

    [Fact]
    public void Second_lazy_restore_with_the_recorded_order_takes_fewer_faults()
    {
        string log = Path.Combine(_dir, "log");
        int pid = SpawnLogged(log, Gcc.Workload("workset"), Mib.ToString(CultureInfo.InvariantCulture), log, Pages.ToString(CultureInfo.InvariantCulture));
        _pids.Add(pid);
        WaitForLine(log, l => l.StartsWith("ready"), timeoutMs: 60_000);
        string images = Path.Combine(_dir, "img");
        Dumper.Dump(new DumpOptions { Pid = pid, ImagesDir = images });
        KillAndReap(pid); // the dump killed it: free the pid
        _pids.Remove(pid);

        // Recording: the background prefetch waits, so the reads come by fault and are recorded.
        string order = Path.Combine(images, WorkingSet.FileName);
        var first = RestoreAndRead(images, log, $"--record-prefetch-order '{order}' --record-window 10");
        Assert.True(File.Exists(order), "the recording run wrote no prefetch order");
        Assert.True(first.Faults >= Pages / 2, $"the recording run took {first.Faults} faults for {Pages} scattered reads: they did not come by fault");
        Assert.Equal(0, first.WorkingSetPages);

        // The recording beside the images is used without being named: the working set goes in first.
        var second = RestoreAndRead(images, log, "");
        Assert.True(second.WorkingSetPages >= Pages, $"only {second.WorkingSetPages} pages pushed from the working set");
        Assert.True(second.Faults * 4 <= first.Faults, $"{second.Faults} faults with the recorded order, {first.Faults} without");
        _out.WriteLine($"first read of the working set: {first.ReadMs:F1} ms recording, {second.ReadMs:F1} ms with the order");
    }
}
