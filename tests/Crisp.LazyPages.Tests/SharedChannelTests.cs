using System.Collections.Concurrent;
using Crisp.Images;
using Crisp.Images.Pages;
using Crisp.LazyPages;
using Crisp.Native;

namespace Crisp.LazyPages.Tests;

/// <summary>
/// A page source that takes one connection, as CRIU's lazy page server does: prefetch shares the
/// fault channel, in small requests, and every page still goes in exactly once.
/// </summary>
public sealed unsafe class SharedChannelTests
{
    private const int PageSize = 4096;

    private sealed class OneConnectionSource(IPageSource inner) : IPageSource
    {
        private int _opened;
        public int Refused;
        /// <summary>(pages, thread name) of every read.</summary>
        public readonly ConcurrentQueue<(int Pages, string? Thread)> Reads = new();

        public IPageChannel OpenChannel()
        {
            if (Interlocked.Increment(ref _opened) > 1)
            {
                Interlocked.Increment(ref Refused);
                throw new PageSourceException("page server 127.0.0.1:27: cannot connect: ConnectionRefused (test: one connection only)");
            }
            return new Channel(inner.OpenChannel(), this);
        }

        public void Dispose() => inner.Dispose();

        private sealed class Channel(IPageChannel c, OneConnectionSource owner) : IPageChannel
        {
            private int _busy;
            public void Read(int pid, ulong vaddr, Span<byte> destination)
            {
                // one connection is one stream: two readers at once would interleave their answers
                Assert.Equal(0, Interlocked.Exchange(ref _busy, 1));
                owner.Reads.Enqueue((destination.Length / PageSize, Thread.CurrentThread.Name));
                c.Read(pid, vaddr, destination);
                Volatile.Write(ref _busy, 0);
            }
            public void Dispose() => c.Dispose();
        }
    }

    [Fact]
    public void Prefetch_shares_a_one_connection_source_in_small_requests_and_delivers_every_page_once()
    {
        const long pages = 8192; // 32 MiB
        nint region = LibC.mmap(0, (nuint)(pages * PageSize), LibC.PROT_READ | LibC.PROT_WRITE, LibC.MAP_PRIVATE | LibC.MAP_ANONYMOUS, -1, 0);
        Assert.NotEqual(LibC.MAP_FAILED, region);
        ulong b = (ulong)region;
        try
        {
            int uffd = InProcessClient.MakeUffd(b, (ulong)(pages * PageSize));
            int pid = LibC.getpid();
            var plan = new LazyPlan(pid, [new LazyVma(b, b + (ulong)(pages * PageSize))], [new PageRange(b, (ulong)pages)]);
            var source = new OneConnectionSource(Pattern.Source());
            var policy = new LazyPagesPolicy();
            using var d = new RunningDaemon(source, _ => plan, policy);
            using var s = InProcessClient.HandOver(d.SocketPath, pid, uffd);
            LibC.close(uffd);
            Assert.Null(InProcessClient.ReadAndCheck(region, 0, 512, _ => false, TimeSpan.FromSeconds(20)));
            InProcessClient.SendFinished(s);
            // faults while prefetch runs, on pages it has not reached yet
            for (long k = pages - 1; k > pages / 2; k -= 331)
                Assert.Null(InProcessClient.ReadAndCheck(region, k, k + 1, _ => false, TimeSpan.FromSeconds(20)));
            Assert.Null(InProcessClient.ReadAndCheck(region, 0, pages, _ => false, TimeSpan.FromSeconds(60)));
            Assert.True(d.WaitExit(TimeSpan.FromSeconds(30)), "daemon did not exit after delivering everything\n" + d.LogText);
            Assert.Null(d.Crash);
            Assert.True(d.ExitCode == 0, d.LogText);

            Assert.Equal(1, source.Refused);
            Assert.Contains("refused a second connection", d.LogText);
            var st = d.Daemon.Stats;
            Assert.Equal(pages, st.FaultPages + st.FaultAroundPages + st.PrefetchPages);
            Assert.Equal(0, st.ExistPages);
            var prefetchReads = source.Reads.Where(r => r.Thread == "lazy-pages prefetch").ToList();
            Assert.NotEmpty(prefetchReads);
            Assert.All(prefetchReads, r => Assert.True(r.Pages <= policy.SharedChannelPrefetchPages, $"a prefetch read of {r.Pages} pages"));
        }
        finally
        {
            LibC.munmap(region, (nuint)(pages * PageSize));
        }
    }
}
