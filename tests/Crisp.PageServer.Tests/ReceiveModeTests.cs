using Crisp.Images;
using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using Crisp.PageServer.Client;
using Crisp.PageServer.Protocol;
using Crisp.PageServer.Server;
using Xunit;

namespace Crisp.PageServer.Tests;

public class ReceiveModeTests
{
    private static readonly IPEndPoint Loopback = new(IPAddress.Loopback, 0);

    private static byte[] Pages(int pid, ulong vaddr, int count)
    {
        var b = new byte[count * 4096];
        PatternPageSource.Fill(pid, vaddr, b);
        return b;
    }

    [Fact]
    public async Task A_dump_sends_runs_holes_and_lazy_entries_for_two_tasks_and_gets_an_acknowledged_close()
    {
        var sink = new MemoryPagemapSink();
        var ended = new ConcurrentQueue<PageServerSessionResult>();
        await using var server = new TcpPageServer(new PageServerOptions { EndPoint = Loopback, Sink = sink });
        server.SessionEnded += ended.Enqueue;
        server.Start();

        byte[] run1 = Pages(1234, 0x400000, 3), run2 = Pages(1234, 0x7f0000000000, 300), run3 = Pages(1235, 0x10000, 1);
        using (var client = PageServerClient.Connect(server.LocalEndPoint))
        {
            Assert.False(client.OpenPagemap(1234)); // has_parent = 0
            client.SendPages(0x400000, run1);
            client.SendEntry(0x403000, 5, PagemapFlags.Lazy);
            client.SendHole(0x500000, 2);
            // A run delivered in pieces, as a dump reading memory in batches would.
            client.BeginPages(0x7f0000000000, 300);
            client.WritePageData(run2.AsSpan(0, 4096 * 100));
            client.WritePageData(run2.AsSpan(4096 * 100));
            Assert.False(client.OpenPagemap(1235));
            client.SendPages(0x10000, run3, PagemapFlags.Present | PagemapFlags.Lazy);
            client.Close();
        }

        await WaitUntil(() => !ended.IsEmpty);
        var result = Assert.Single(ended);
        Assert.Equal(SessionOutcome.Completed, result.Outcome);

        var a = sink.Committed[(PagemapKind.Process, 1234)];
        Assert.Equal(
            [(0x400000UL, 3UL, PagemapFlags.Present), (0x403000UL, 5UL, PagemapFlags.Lazy),
             (0x500000UL, 2UL, PagemapFlags.Parent), (0x7f0000000000UL, 300UL, PagemapFlags.Present)],
            a.Entries);
        Assert.Equal(run1.Concat(run2).ToArray(), a.Pages.ToArray());

        var b = sink.Committed[(PagemapKind.Process, 1235)];
        Assert.Equal([(0x10000UL, 1UL, PagemapFlags.Present | PagemapFlags.Lazy)], b.Entries);
        Assert.Equal(run3, b.Pages.ToArray());
        Assert.Empty(sink.Discarded);
        Assert.True(a.Disposed && b.Disposed, "writers must be released after CLOSE");
    }

    [Fact]
    public async Task A_storage_failure_is_its_own_outcome_and_the_dump_gets_no_acknowledgement()
    {
        var sink = new MemoryPagemapSink { FailWrites = true };
        var ended = new ConcurrentQueue<PageServerSessionResult>();
        await using var server = new TcpPageServer(new PageServerOptions { EndPoint = Loopback, Sink = sink });
        server.SessionEnded += ended.Enqueue;
        server.Start();

        using (var client = PageServerClient.Connect(server.LocalEndPoint, TimeSpan.FromSeconds(5)))
        {
            client.OpenPagemap(12);
            Assert.Throws<Crisp.PageServer.Protocol.PeerGoneException>(() =>
            {
                client.SendPages(0x1000, Pages(12, 0x1000, 4));
                client.Close();
            });
        }
        await WaitUntil(() => !ended.IsEmpty);
        var r = Assert.Single(ended);
        Assert.Equal(SessionOutcome.StorageError, r.Outcome);
        Assert.Contains("No space left", r.Error!.Message);
        Assert.Empty(sink.Committed);
    }

    [Fact]
    public async Task A_dump_that_disconnects_without_close_loses_its_pagemaps_and_is_reported_as_peer_gone()
    {
        var sink = new MemoryPagemapSink();
        var ended = new ConcurrentQueue<PageServerSessionResult>();
        await using var server = new TcpPageServer(new PageServerOptions { EndPoint = Loopback, Sink = sink });
        server.SessionEnded += ended.Enqueue;
        server.Start();

        using (var client = PageServerClient.Connect(server.LocalEndPoint))
        {
            client.OpenPagemap(77);
            client.SendPages(0x1000, Pages(77, 0x1000, 2));
        }

        await WaitUntil(() => !ended.IsEmpty);
        Assert.Equal(SessionOutcome.PeerGone, Assert.Single(ended).Outcome);
        Assert.Empty(sink.Committed);
        Assert.Single(sink.Discarded);
    }

    [Fact]
    public async Task Several_dumps_at_once_each_get_their_own_session()
    {
        var sink = new MemoryPagemapSink();
        await using var server = new TcpPageServer(new PageServerOptions { EndPoint = Loopback, Sink = sink });
        server.Start();

        await Task.WhenAll(Enumerable.Range(100, 4).Select(pid => Task.Run(() =>
        {
            using var client = PageServerClient.Connect(server.LocalEndPoint);
            client.OpenPagemap(pid);
            client.SendPages(0x200000, Pages(pid, 0x200000, 64));
            client.Close();
        })));

        for (int pid = 100; pid < 104; pid++)
            Assert.Equal(Pages(pid, 0x200000, 64), sink.Committed[(PagemapKind.Process, (ulong)pid)].Pages.ToArray());
    }

    [Fact]
    public async Task Unknown_commands_and_gets_without_a_source_are_protocol_errors()
    {
        var ended = new ConcurrentQueue<PageServerSessionResult>();
        await using var server = new TcpPageServer(new PageServerOptions { EndPoint = Loopback, Sink = new MemoryPagemapSink() });
        server.SessionEnded += ended.Enqueue;
        server.Start();

        foreach (var bad in new[] { new PageServerIov(0x99, 0, 0, 0), PageServerIov.Get(1, 0x1000, 1) })
        {
            using var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            await s.ConnectAsync(server.LocalEndPoint);
            var buf = new byte[32];
            bad.WriteTo(buf);
            await s.SendAsync(buf);
            // The server hangs up on a protocol error.
            Assert.Equal(0, await s.ReceiveAsync(new byte[1]).WaitAsync(TimeSpan.FromSeconds(5)));
        }

        await WaitUntil(() => ended.Count == 2);
        Assert.All(ended, r => Assert.Equal(SessionOutcome.ProtocolError, r.Outcome));
    }

    [Fact]
    public async Task Status_fd_gets_one_zero_byte_once_listening_and_ipv6_literals_work()
    {
        int[] fds = new int[2];
        unsafe
        {
            fixed (int* p = fds) Assert.Equal(0, Crisp.Native.LibC.pipe2(p, 0));
        }
        try
        {
            await using var server = new TcpPageServer(new PageServerOptions
            {
                EndPoint = new IPEndPoint(IPAddress.IPv6Loopback, 0),
                Sink = new MemoryPagemapSink(),
                StatusFd = fds[1],
            });
            server.Start();
            fds[1] = -1; // the server closed it

            var got = new byte[2];
            unsafe
            {
                fixed (byte* p = got)
                {
                    Assert.Equal(1, (int)Crisp.Native.LibC.read(fds[0], p, 2));
                    Assert.Equal(0, got[0]);
                    Assert.Equal(0, (int)Crisp.Native.LibC.read(fds[0], p, 2)); // closed after the byte
                }
            }

            using var client = PageServerClient.Connect(server.LocalEndPoint);
            Assert.Equal(AddressFamily.InterNetworkV6, server.LocalEndPoint.AddressFamily);
            client.OpenPagemap(5);
            client.Close();
        }
        finally
        {
            Crisp.Native.LibC.close(fds[0]);
            if (fds[1] >= 0) Crisp.Native.LibC.close(fds[1]);
        }
    }

    [Fact]
    public async Task The_default_listen_address_takes_ipv4_and_ipv6_clients()
    {
        var sink = new MemoryPagemapSink();
        await using var server = new TcpPageServer(new PageServerOptions { EndPoint = PageServerAddress.ParseListen(null, 0), Sink = sink });
        server.Start();
        int port = server.LocalEndPoint.Port;
        foreach (var (ip, pid) in new[] { (IPAddress.Loopback, 21), (IPAddress.IPv6Loopback, 22) })
        {
            using var client = PageServerClient.Connect(new IPEndPoint(ip, port));
            client.OpenPagemap(pid);
            client.SendPages(0x1000, Pages(pid, 0x1000, 1));
            client.Close();
        }
        await WaitUntil(() => sink.Committed.Count == 2);
    }

    internal static async Task WaitUntil(Func<bool> condition, int timeoutMs = 10_000)
    {
        var deadline = Environment.TickCount64 + timeoutMs;
        while (!condition())
        {
            if (Environment.TickCount64 > deadline) throw new TimeoutException("condition not reached");
            await Task.Delay(10);
        }
    }
}
