using System.Net.Sockets;
using System.Text.Json;
using Crisp.Images.Pages;
using Crisp.LazyPages;
using Crisp.Native;

namespace Crisp.LazyPages.Tests;

/// <summary>
/// The test process lazily "restores" a region of its own: it makes a uffd, registers an empty
/// mapping, hands the fd to the daemon, and reads every byte from another thread.
/// </summary>
public sealed unsafe class InProcessTests
{
    private const int PageSize = 4096;

    private static int MakeUffd(ulong start, ulong len) => InProcessClient.MakeUffd(start, len);
    private static Socket HandOver(string socketPath, int pid, int uffd) => InProcessClient.HandOver(socketPath, pid, uffd);
    private static void SendFinished(Socket s) => InProcessClient.SendFinished(s);
    private static string? ReadAndCheck(nint region, long fromPage, long toPage, Func<long, bool> isZero, TimeSpan timeout) =>
        InProcessClient.ReadAndCheck(region, fromPage, toPage, isZero, timeout);


    [Fact]
    public void Faults_and_prefetch_deliver_every_page_exactly_once()
    {
        const long pages = 8192; // 32 MiB
        const long holeStart = 3000, holeEnd = 3100; // not in the image: zeros
        nint region = LibC.mmap(0, (nuint)(pages * PageSize), LibC.PROT_READ | LibC.PROT_WRITE, LibC.MAP_PRIVATE | LibC.MAP_ANONYMOUS, -1, 0);
        Assert.NotEqual(LibC.MAP_FAILED, region);
        ulong b = (ulong)region;
        try
        {
            int uffd = MakeUffd(b, (ulong)(pages * PageSize));
            int pid = LibC.getpid();
            var plan = new LazyPlan(pid, [new LazyVma(b, b + (ulong)(pages * PageSize))],
                [new PageRange(b, (ulong)holeStart), new PageRange(b + (ulong)(holeEnd * PageSize), (ulong)(pages - holeEnd))]);
            var source = Pattern.Source();
            using var d = new RunningDaemon(source, p => p == pid ? plan : throw new InvalidOperationException($"unexpected pid {p}"));
            using var s = HandOver(d.SocketPath, pid, uffd);
            LibC.close(uffd); // the daemon has its own copy

            // before restore-finished nothing is prefetched: these are all faults
            Func<long, bool> isZero = k => k >= holeStart && k < holeEnd;
            Assert.Null(ReadAndCheck(region, 0, 1024, isZero, TimeSpan.FromSeconds(20)));        // sequential
            Assert.Null(ReadAndCheck(region, holeStart - 2, holeStart + 10, isZero, TimeSpan.FromSeconds(20)));
            for (long k = 5000; k < 6000; k += 97)
                Assert.Null(ReadAndCheck(region, k, k + 1, isZero, TimeSpan.FromSeconds(20))); // scattered
            Assert.Equal(0, d.Daemon.Stats.PrefetchPages);
            Assert.True(d.Daemon.Stats.Faults > 0);

            SendFinished(s);
            Assert.Null(ReadAndCheck(region, 0, pages, isZero, TimeSpan.FromSeconds(60)));
            Assert.True(d.WaitExit(TimeSpan.FromSeconds(30)), "daemon did not exit after delivering everything\n" + d.LogText);
            Assert.Null(d.Crash);
            Assert.Equal(0, d.ExitCode);

            var st = d.Daemon.Stats;
            long dataPages = pages - (holeEnd - holeStart);
            Assert.Equal(dataPages, st.FaultPages + st.FaultAroundPages + st.PrefetchPages);
            Assert.Equal(0, st.ExistPages);
            Assert.True(st.PrefetchPages > 0, st.ToString());
            Assert.True(st.ZeroPages > 0, st.ToString());
            Assert.Equal(dataPages * PageSize, st.Bytes);
            Assert.True(st.LatencyPercentileMicros(50) > 0);
            Assert.True(st.LatencyPercentileMicros(99) >= st.LatencyPercentileMicros(50));

            // the stats print as text and as JSON
            string text = st.ToString();
            Assert.Contains("faults:", text);
            Assert.Contains("by prefetch", text);
            using var json = JsonDocument.Parse(st.ToJson());
            var root = json.RootElement;
            Assert.Equal(st.Faults, root.GetProperty("faults").GetInt64());
            Assert.Equal(st.PrefetchPages, root.GetProperty("prefetch_pages").GetInt64());
            Assert.Equal(st.FaultAroundPages, root.GetProperty("fault_around_pages").GetInt64());
            Assert.Equal(st.Bytes, root.GetProperty("bytes").GetInt64());
            Assert.True(root.GetProperty("fault_latency_p99_micros").GetDouble() > 0);
            Assert.True(root.GetProperty("elapsed_seconds").GetDouble() > 0);
        }
        finally
        {
            LibC.munmap(region, (nuint)(pages * PageSize));
        }
    }

    [Fact]
    public void A_failing_page_source_poisons_instead_of_handing_out_zeros()
    {
        const long pages = 1024;
        nint region = LibC.mmap(0, (nuint)(pages * PageSize), LibC.PROT_READ | LibC.PROT_WRITE, LibC.MAP_PRIVATE | LibC.MAP_ANONYMOUS, -1, 0);
        ulong b = (ulong)region;
        try
        {
            int uffd = MakeUffd(b, (ulong)(pages * PageSize));
            int pid = LibC.getpid();
            var plan = new LazyPlan(pid, [new LazyVma(b, b + (ulong)(pages * PageSize))], [new PageRange(b, (ulong)pages)]);
            ulong broken = b + 512 * PageSize;
            var source = Pattern.Source((vaddr, len) =>
            {
                if (vaddr + (ulong)len > broken) throw new Crisp.Images.PageSourceException("pages image unreadable (test)");
            });
            using var d = new RunningDaemon(source, _ => plan);
            using var s = HandOver(d.SocketPath, pid, uffd);
            LibC.close(uffd);
            Assert.Null(ReadAndCheck(region, 0, 16, _ => false, TimeSpan.FromSeconds(20)));
            SendFinished(s);
            Assert.True(d.WaitExit(TimeSpan.FromSeconds(30)), "daemon did not exit\n" + d.LogText);
            Assert.Equal(1, d.ExitCode);
            Assert.Contains(d.Daemon.Failures, f => f.Contains($"pid {pid}") && f.Contains("poisoned"));
            Assert.True(d.Daemon.Stats.PoisonedPages > 0);
            // the good half is intact; the pages after the break are poisoned: mincore-free check via
            // process_vm_readv, which fails with EFAULT on a poisoned page instead of raising SIGBUS here
            Assert.Null(ReadAndCheck(region, 0, 256, _ => false, TimeSpan.FromSeconds(20)));
            ulong probe = 0;
            var local = new LibC.iovec((nint)(&probe), 8);
            var remote = new LibC.iovec(region + 1000 * PageSize, 8);
            nint n = LibC.process_vm_readv(pid, &local, 1, &remote, 1, 0);
            Assert.Equal(-1, (long)n);
            Assert.Equal(0UL, probe);
        }
        finally
        {
            LibC.munmap(region, (nuint)(pages * PageSize));
        }
    }
}
