using System.Diagnostics;
using System.Net.Sockets;
using Crisp.Images;
using Crisp.Images.Pages;
using Crisp.LazyPages;
using Crisp.Native;

using static Crisp.LazyPages.Tests.LazyClientLayout;

namespace Crisp.LazyPages.Tests;

/// <summary>
/// Nothing waits forever: a daemon whose peers never come gives up after its peer timeout, one
/// whose process dies notices, one that is stopped poisons what is left and removes its socket.
/// </summary>
public sealed unsafe class LifetimeTests
{
    private const int PageSize = 4096;

    /// <summary>A page source that cannot be reached: every channel fails to open.</summary>
    private sealed class UnreachableSource : IPageSource
    {
        public int Attempts;
        public IPageChannel OpenChannel()
        {
            Interlocked.Increment(ref Attempts);
            throw new PageSourceException("page server 192.0.2.1:27: cannot connect: ConnectionRefused (test)");
        }
        public void Dispose() { }
    }

    [Fact]
    public void With_no_restore_the_daemon_gives_up_after_its_peer_timeout_and_removes_its_socket()
    {
        var sw = Stopwatch.StartNew();
        using var d = new RunningDaemon(Pattern.Source(), p => throw new InvalidOperationException($"no plan expected (pid {p})"),
            peerTimeout: TimeSpan.FromSeconds(1));
        Assert.True(File.Exists(d.SocketPath));
        Assert.True(d.WaitExit(TimeSpan.FromSeconds(30)), "the daemon still waits for a restore\n" + d.LogText);
        Assert.True(sw.Elapsed >= TimeSpan.FromSeconds(1), $"gave up after {sw.Elapsed}, before its timeout");
        Assert.Null(d.Crash);
        Assert.Equal(1, d.ExitCode);
        Assert.Contains(d.Daemon.Failures, f => f.Contains("no restore connected") && f.Contains("within 1 s"));
        Assert.False(File.Exists(d.SocketPath), "the socket file was left behind");
    }

    [Fact]
    public void A_restore_that_connects_and_leaves_without_a_process_does_not_keep_the_daemon()
    {
        using var d = new RunningDaemon(Pattern.Source(), p => throw new InvalidOperationException($"no plan expected (pid {p})"),
            peerTimeout: TimeSpan.FromSeconds(1));
        using (var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified))
            s.Connect(new UnixDomainSocketEndPoint(d.SocketPath)); // a restore that failed before its first hand-off
        Assert.True(d.WaitExit(TimeSpan.FromSeconds(30)), "the daemon still waits\n" + d.LogText);
        Assert.Equal(1, d.ExitCode);
        Assert.Contains(d.Daemon.Failures, f => f.Contains("left without handing over a process"));
        Assert.False(File.Exists(d.SocketPath));
    }

    [Fact]
    public void An_unreachable_page_source_makes_the_daemon_give_up_without_listening()
    {
        var source = new UnreachableSource();
        var sw = Stopwatch.StartNew();
        using var d = new RunningDaemon(source, p => throw new InvalidOperationException($"no plan expected (pid {p})"),
            peerTimeout: TimeSpan.FromSeconds(1), expectReady: false);
        Assert.True(d.WaitExit(TimeSpan.FromSeconds(30)), "the daemon still tries\n" + d.LogText);
        Assert.True(sw.Elapsed >= TimeSpan.FromSeconds(1), $"gave up after {sw.Elapsed}, before its timeout");
        Assert.Null(d.Crash);
        Assert.Equal(1, d.ExitCode);
        Assert.True(source.Attempts > 1, "it did not try again");
        Assert.Contains(d.Daemon.Failures, f => f.Contains("could not be reached within 1 s") && f.Contains("ConnectionRefused (test)"));
        Assert.False(File.Exists(d.SocketPath));
    }

    [Fact]
    public void A_daemon_that_cannot_listen_closes_its_status_fd_so_nobody_waits_for_it()
    {
        string file = Path.GetTempFileName(); // a file where the work directory should be
        int* fds = stackalloc int[2];
        Errno.Check(LibC.pipe2(fds, LibC.O_CLOEXEC), "pipe2", "status pipe");
        try
        {
            using var daemon = new LazyPagesDaemon(new LazyPagesOptions
            {
                WorkDir = Path.Combine(file, "work"),
                PageSource = Pattern.Source(),
                PlanFor = p => throw new InvalidOperationException($"no plan expected (pid {p})"),
                StatusFd = fds[1],
                Log = Logger.Silent,
            });
            Assert.ThrowsAny<IOException>(() => daemon.Run());
            byte b;
            var pfd = new LibC.PollFd { fd = fds[0], events = LibC.POLLIN };
            Assert.Equal(1, LibC.poll(&pfd, 1, 10_000));
            Assert.Equal(0, (int)LibC.read(fds[0], &b, 1)); // end of file: the daemon closed its end, wrote nothing
        }
        finally
        {
            LibC.close(fds[0]);
            File.Delete(file);
        }
    }

    [Fact]
    public void The_daemon_notices_that_the_process_it_serves_died()
    {
        string client = NativePrograms.Build("lazy_client");
        // Slow enough that prefetch could not finish for minutes: only noticing the exit ends the daemon.
        var source = Pattern.Source((_, _) => Thread.Sleep(1000));
        using var d = new RunningDaemon(source, PlanFor);
        var (exit, stdout, stderr, timedOut) = NativePrograms.Run(client, TimeSpan.FromSeconds(60), d.SocketPath, "exit");
        Assert.False(timedOut, stderr);
        Assert.True(exit == 0 && stdout.Contains("EXIT"), $"client exit {exit}\n{stderr}");
        Assert.True(d.WaitExit(TimeSpan.FromSeconds(20)), "the daemon did not notice its process died\n" + d.LogText);
        Assert.Null(d.Crash);
        Assert.True(d.ExitCode == 0, d.LogText); // the process went away on its own: nothing failed
        Assert.Matches(@"pid \d+ exited( \(ESRCH\))? with \d+ page\(s\) never delivered", d.LogText);
        Assert.True(d.Daemon.Stats.PrefetchPages < (long)(Pages - (HoleEnd - HoleStart)), d.Daemon.Stats.ToString());
        Assert.False(File.Exists(d.SocketPath));
    }

    [Fact]
    public void Stopping_poisons_what_is_left_keeps_what_was_delivered_and_removes_the_socket()
    {
        const long pages = 1024;
        nint region = LibC.mmap(0, (nuint)(pages * PageSize), LibC.PROT_READ | LibC.PROT_WRITE, LibC.MAP_PRIVATE | LibC.MAP_ANONYMOUS, -1, 0);
        Assert.NotEqual(LibC.MAP_FAILED, region);
        ulong b = (ulong)region;
        try
        {
            int uffd = InProcessClient.MakeUffd(b, (ulong)(pages * PageSize));
            int pid = LibC.getpid();
            var plan = new LazyPlan(pid, [new LazyVma(b, b + (ulong)(pages * PageSize))], [new PageRange(b, (ulong)pages)]);
            using var d = new RunningDaemon(Pattern.Source(), _ => plan);
            using var s = InProcessClient.HandOver(d.SocketPath, pid, uffd);
            LibC.close(uffd);
            // no restore-finished: nothing is prefetched, only what is touched comes in
            Assert.Null(InProcessClient.ReadAndCheck(region, 0, 16, _ => false, TimeSpan.FromSeconds(20)));
            d.Cancel(); // what SIGTERM does to `crisp lazy-pages`
            Assert.True(d.WaitExit(TimeSpan.FromSeconds(30)), "the daemon did not stop\n" + d.LogText);
            Assert.Equal(1, d.ExitCode);
            Assert.Contains(d.Daemon.Failures, f => f.Contains("poisoned"));
            Assert.Equal(pages - 16, d.Daemon.Stats.PoisonedPages);
            Assert.False(File.Exists(d.SocketPath), "the socket file was left behind");
            // what was delivered stays; the rest raises SIGBUS (process_vm_readv says EFAULT), never zeros
            Assert.Null(InProcessClient.ReadAndCheck(region, 0, 16, _ => false, TimeSpan.FromSeconds(20)));
            ulong probe = 0;
            var local = new LibC.iovec((nint)(&probe), 8);
            var remote = new LibC.iovec(region + 500 * PageSize, 8);
            Assert.Equal(-1, (long)LibC.process_vm_readv(pid, &local, 1, &remote, 1, 0));
        }
        finally
        {
            LibC.munmap(region, (nuint)(pages * PageSize));
        }
    }
}
