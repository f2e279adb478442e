using Crisp.LazyPages;

using static Crisp.LazyPages.Tests.LazyClientLayout;

namespace Crisp.LazyPages.Tests;

/// <summary>
/// A separate C process (native/lazy_client.c) makes its own uffd, does CRIU's hand-off, and checks
/// every byte across madvise(DONTNEED), munmap, mremap and fork.
/// </summary>
public sealed class ProcessTests
{
    [Theory]
    [InlineData("early", 0)]
    [InlineData("late", 0)]
    [InlineData("late", 300)] // a slow source: prefetch claims are in flight while the events come
    public void Process_sees_its_data_across_remove_unmap_remap_and_fork(string mode, int readDelayMicros)
    {
        string client = NativePrograms.Build("lazy_client");
        var source = Pattern.Source((_, _) => { if (readDelayMicros > 0) Thread.Sleep(TimeSpan.FromMicroseconds(readDelayMicros)); });
        using var d = new RunningDaemon(source, PlanFor);
        var (exit, stdout, stderr, timedOut) = NativePrograms.Run(client, TimeSpan.FromSeconds(60), d.SocketPath, mode);
        Assert.False(timedOut, "client hung\n" + stderr + "\n" + d.LogText);
        Assert.True(exit == 0, $"client exit {exit}\n{stderr}\n{d.LogText}");
        Assert.Contains("OK", stdout);
        Assert.True(d.WaitExit(TimeSpan.FromSeconds(30)), "daemon did not exit\n" + d.LogText);
        Assert.Null(d.Crash);
        Assert.True(d.ExitCode == 0, d.LogText);
        var st = d.Daemon.Stats;
        if (mode == "early")
        {
            Assert.Equal(2, st.Processes); // the client and its forked child
            Assert.Equal(1, st.Forks);
        }
        // late: prefetch may have delivered everything (and the daemon closed the uffd) before the fork
        Assert.True(st.Faults > 0);
        Assert.True(st.ZeroPages > 0, st.ToString());
        if (mode == "early") Assert.True(st.FaultPages > 20 && st.FaultAroundPages > st.FaultPages, st.ToString());
    }

    [Fact]
    public void Lost_page_source_means_SIGBUS_not_zeros_and_not_a_hang()
    {
        string client = NativePrograms.Build("lazy_client");
        // pages of the scattered-read area (2000..3000) cannot be read
        var source = Pattern.Source((vaddr, len) =>
        {
            if (vaddr + (ulong)len > Base + 2000 * 4096 && vaddr < Base + 3000 * 4096)
                throw new Crisp.Images.PageSourceException("pages image unreadable (test)");
        });
        using var d = new RunningDaemon(source, PlanFor);
        var (exit, _, stderr, timedOut) = NativePrograms.Run(client, TimeSpan.FromSeconds(60), d.SocketPath, "early");
        Assert.False(timedOut, "client hung\n" + stderr + "\n" + d.LogText);
        Assert.True(exit == 42, $"client exit {exit}, want 42 (SIGBUS)\n{stderr}\n{d.LogText}");
        Assert.Contains("SIGBUS", stderr);
        Assert.True(d.WaitExit(TimeSpan.FromSeconds(30)), "daemon did not exit\n" + d.LogText);
        Assert.Equal(1, d.ExitCode);
        Assert.Contains(d.Daemon.Failures, f => f.Contains("pid ") && f.Contains("poisoned") && f.Contains("unreadable"));
    }

    [Fact]
    public void With_KillOnFailure_the_process_is_killed()
    {
        string client = NativePrograms.Build("lazy_client");
        var source = Pattern.Source((vaddr, len) =>
        {
            if (vaddr + (ulong)len > Base + 2000 * 4096 && vaddr < Base + 3000 * 4096)
                throw new Crisp.Images.PageSourceException("pages image unreadable (test)");
        });
        using var d = new RunningDaemon(source, PlanFor, new LazyPagesPolicy { KillOnFailure = true });
        var (exit, _, stderr, timedOut) = NativePrograms.Run(client, TimeSpan.FromSeconds(60), d.SocketPath, "early");
        Assert.False(timedOut, "client hung\n" + stderr + "\n" + d.LogText);
        Assert.True(exit == 128 + 9, $"client exit {exit}, want SIGKILL\n{stderr}\n{d.LogText}");
        Assert.True(d.WaitExit(TimeSpan.FromSeconds(30)), "daemon did not exit\n" + d.LogText);
        Assert.Equal(1, d.ExitCode);
        Assert.Contains(d.Daemon.Failures, f => f.Contains("killed"));
    }
}
