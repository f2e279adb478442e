using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Crisp.Images;
using Crisp.PageServer.Client;
using Crisp.PageServer.Server;
using Xunit;
using Xunit.Abstractions;

namespace Crisp.PageServer.Tests;

public class LazyModeTests(ITestOutputHelper output)
{
    private static readonly IPEndPoint Loopback = new(IPAddress.Loopback, 0);

    [Fact]
    public async Task Three_restores_in_a_row_fetch_the_same_pages()
    {
        var source = new PatternPageSource();
        var ended = new ConcurrentQueue<PageServerSessionResult>();
        await using var server = new TcpPageServer(new PageServerOptions { EndPoint = Loopback, Source = source });
        server.SessionEnded += ended.Enqueue;
        server.Start();

        for (int restore = 0; restore < 3; restore++)
        {
            using var remote = new RemotePageSource(server.LocalEndPoint);
            using var fault = remote.OpenChannel();
            using var bulk = remote.OpenChannel();
            var page = new byte[4096];
            fault.Read(4242, 0x7f00_0000_3000, page);
            Assert.Equal(-1, PatternPageSource.FirstBadPage(4242, 0x7f00_0000_3000, page));

            var big = new byte[5 << 20]; // several server chunks
            bulk.Read(4242, 0x7f00_0010_0000, big);
            Assert.Equal(-1, PatternPageSource.FirstBadPage(4242, 0x7f00_0010_0000, big));

            var other = new byte[3 * 4096];
            fault.Read(4243, 0x1000, other);
            Assert.Equal(-1, PatternPageSource.FirstBadPage(4243, 0x1000, other));
        }

        await ReceiveModeTests.WaitUntil(() => ended.Count == 6);
        Assert.All(ended, r => Assert.Equal(SessionOutcome.Completed, r.Outcome));
    }

    [Fact]
    public async Task A_fault_on_its_own_channel_is_answered_while_a_huge_get_streams_on_another()
    {
        // The source takes a little time per MiB so the bulk transfer lasts long enough to overlap.
        long firstBulkChunk = 0;
        var source = new PatternPageSource
        {
            BeforeRead = n =>
            {
                if (n >= 1 << 20)
                {
                    Interlocked.CompareExchange(ref firstBulkChunk, Stopwatch.GetTimestamp(), 0);
                    Thread.Sleep(8);
                }
            },
        };
        await using var server = new TcpPageServer(new PageServerOptions { EndPoint = Loopback, Source = source });
        server.Start();

        using var remote = new RemotePageSource(server.LocalEndPoint);
        using var bulk = remote.OpenChannel();
        using var fault = remote.OpenChannel();

        long bulkStart = 0, bulkEnd = 0;
        var big = new byte[64 << 20];
        var bulkTask = Task.Factory.StartNew(() =>
        {
            bulkStart = Stopwatch.GetTimestamp();
            bulk.Read(1, 0x10_0000_0000, big);
            bulkEnd = Stopwatch.GetTimestamp();
        }, TaskCreationOptions.LongRunning);

        await ReceiveModeTests.WaitUntil(() => Interlocked.Read(ref firstBulkChunk) != 0);
        var faultTimes = new List<(long Start, long End)>();
        var page = new byte[4096];
        for (int i = 0; i < 5; i++)
        {
            long s = Stopwatch.GetTimestamp();
            fault.Read(1, 0x20_0000_0000 + (ulong)i * 4096, page);
            faultTimes.Add((s, Stopwatch.GetTimestamp()));
            Assert.Equal(-1, PatternPageSource.FirstBadPage(1, 0x20_0000_0000 + (ulong)i * 4096, page));
        }
        await bulkTask;
        Assert.Equal(-1, PatternPageSource.FirstBadPage(1, 0x10_0000_0000, big));

        double Ms(long from, long to) => (to - from) * 1000.0 / Stopwatch.Frequency;
        output.WriteLine($"bulk 64 MiB: {Ms(bulkStart, bulkEnd):F1} ms; faults answered at " +
                         string.Join(", ", faultTimes.Select(f => $"{Ms(bulkStart, f.End):F1} ms ({Ms(f.Start, f.End) * 1000:F0} µs)")));
        // Ordering, not timing: every fault was answered while the bulk transfer was still running.
        Assert.All(faultTimes, f => Assert.True(f.End < bulkEnd, "a fault waited for the bulk transfer to finish"));
    }

    [Fact]
    public async Task Stopping_the_server_mid_transfer_makes_read_throw_quickly()
    {
        var started = new ManualResetEventSlim();
        var source = new PatternPageSource
        {
            BeforeRead = n => { started.Set(); Thread.Sleep(20); },
        };
        var server = new TcpPageServer(new PageServerOptions { EndPoint = Loopback, Source = source });
        server.Start();
        using var remote = new RemotePageSource(server.LocalEndPoint, new RemotePageSourceOptions { ReceiveTimeout = TimeSpan.FromSeconds(5) });
        using var channel = remote.OpenChannel();

        var sw = Stopwatch.StartNew();
        var read = Task.Factory.StartNew(() => channel.Read(9, 0x1000, new byte[512 << 20]), TaskCreationOptions.LongRunning);
        Assert.True(started.Wait(5000));
        await server.StopAsync();
        var e = await Assert.ThrowsAsync<PageSourceException>(() => read).WaitAsync(TimeSpan.FromSeconds(10));
        output.WriteLine($"{sw.ElapsedMilliseconds} ms: {e.Message}");
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(5), "read outlived the receive timeout");

        // Reconnecting to the dead server fails fast too.
        sw.Restart();
        Assert.Throws<PageSourceException>(() => channel.Read(9, 0x1000, new byte[4096]));
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(5));
        Assert.Throws<PageSourceException>(() => remote.OpenChannel());
    }

    [Fact]
    public async Task Stopping_does_not_hang_on_a_session_stuck_in_its_page_source()
    {
        using var release = new ManualResetEventSlim();
        var entered = new ManualResetEventSlim();
        var source = new PatternPageSource { BeforeRead = _ => { entered.Set(); release.Wait(30_000); } };
        var server = new TcpPageServer(new PageServerOptions { EndPoint = Loopback, Source = source, StopGrace = TimeSpan.FromSeconds(1) });
        server.Start();
        using var remote = new RemotePageSource(server.LocalEndPoint, new RemotePageSourceOptions { ReceiveTimeout = TimeSpan.FromSeconds(20) });
        using var channel = remote.OpenChannel();
        var read = Task.Factory.StartNew(() => channel.Read(2, 0x1000, new byte[4096]), TaskCreationOptions.LongRunning);
        Assert.True(entered.Wait(5000));

        var sw = Stopwatch.StartNew();
        await server.StopAsync().WaitAsync(TimeSpan.FromSeconds(10));
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(4), $"stop took {sw.Elapsed}");
        // The client sees the closed socket, not its 20 s timeout.
        await Assert.ThrowsAsync<PageSourceException>(() => read).WaitAsync(TimeSpan.FromSeconds(5));
        release.Set();
    }

    [Fact]
    public async Task A_server_that_stalls_mid_transfer_hits_the_receive_timeout_instead_of_hanging()
    {
        var release = new ManualResetEventSlim();
        var source = new PatternPageSource { BeforeRead = n => { if (n < 1 << 20) return; release.Wait(30_000); } };
        await using var server = new TcpPageServer(new PageServerOptions { EndPoint = Loopback, Source = source, ChunkSize = 1 << 20 });
        server.Start();
        using var remote = new RemotePageSource(server.LocalEndPoint, new RemotePageSourceOptions { ReceiveTimeout = TimeSpan.FromSeconds(1) });
        using var channel = remote.OpenChannel();

        var sw = Stopwatch.StartNew();
        var e = Assert.Throws<PageSourceException>(() => channel.Read(3, 0x1000, new byte[4 << 20]));
        output.WriteLine($"{sw.ElapsedMilliseconds} ms: {e.Message}");
        Assert.InRange(sw.Elapsed, TimeSpan.FromSeconds(0.9), TimeSpan.FromSeconds(4));
        Assert.Contains("no answer within 1 s", e.Message);
        release.Set();

        // The broken connection is dropped; the next read reconnects and works.
        var page = new byte[4096];
        channel.Read(3, 0x5000, page);
        Assert.Equal(-1, PatternPageSource.FirstBadPage(3, 0x5000, page));
    }

    [Fact]
    public void A_killed_server_process_makes_read_throw_at_once()
    {
        // A fake page server in a separate process: answers a GET with the header and part of the
        // data, then waits to be killed. The kernel closes its socket, the reader must notice.
        string script = """
            import socket, struct, sys, time
            s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(1)
            print(s.getsockname()[1], flush=True)
            c, _ = s.accept()
            hdr = b""
            while len(hdr) < 32: hdr += c.recv(32 - len(hdr))
            cmd, nr, vaddr, dst = struct.unpack("<I4xQQQ", hdr)
            c.sendall(struct.pack("<I4xQQQ", 6 | 4 << 16, nr, vaddr, dst) + b"\0" * 65536)
            print("sent", flush=True)
            time.sleep(60)
            """;
        var psi = new ProcessStartInfo("python3", ["-c", script]) { RedirectStandardOutput = true };
        using var proc = Process.Start(psi)!;
        try
        {
            int port = int.Parse(proc.StandardOutput.ReadLine()!);
            using var remote = new RemotePageSource(new IPEndPoint(IPAddress.Loopback, port),
                new RemotePageSourceOptions { ReceiveTimeout = TimeSpan.FromSeconds(5) });
            using var channel = remote.OpenChannel();
            var read = Task.Factory.StartNew(() => channel.Read(1, 0x1000, new byte[1 << 20]), TaskCreationOptions.LongRunning);
            Assert.Equal("sent", proc.StandardOutput.ReadLine());
            var sw = Stopwatch.StartNew();
            proc.Kill();
            var e = Assert.Throws<AggregateException>(() => read.Wait(TimeSpan.FromSeconds(10)));
            Assert.IsType<PageSourceException>(e.InnerException);
            output.WriteLine($"{sw.ElapsedMilliseconds} ms after kill: {e.InnerException!.Message}");
            Assert.True(sw.Elapsed < TimeSpan.FromSeconds(4), "the reader waited for the timeout instead of seeing the close");
        }
        finally
        {
            if (!proc.HasExited) proc.Kill();
            proc.WaitForExit();
        }
    }

    [Fact]
    public void Connecting_to_nothing_fails_fast_with_a_page_source_exception()
    {
        // Find a port nobody listens on.
        using var probe = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        probe.Bind(Loopback);
        var ep = (IPEndPoint)probe.LocalEndPoint!;
        probe.Close();
        using var remote = new RemotePageSource(ep);
        var sw = Stopwatch.StartNew();
        var e = Assert.Throws<PageSourceException>(() => remote.OpenChannel());
        Assert.Contains("cannot connect", e.Message);
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(2));
    }

    [Fact]
    public async Task A_source_error_closes_the_connection_and_the_client_says_so()
    {
        var source = new PatternPageSource { BeforeRead = _ => throw new PageSourceException("no such pages") };
        var ended = new ConcurrentQueue<PageServerSessionResult>();
        await using var server = new TcpPageServer(new PageServerOptions { EndPoint = Loopback, Source = source });
        server.SessionEnded += ended.Enqueue;
        server.Start();
        using var remote = new RemotePageSource(server.LocalEndPoint);
        using var channel = remote.OpenChannel();
        Assert.Throws<PageSourceException>(() => channel.Read(1, 0x1000, new byte[4096]));
        await ReceiveModeTests.WaitUntil(() => !ended.IsEmpty);
        Assert.Equal(SessionOutcome.SourceError, Assert.Single(ended).Outcome);
    }

    [Fact]
    public async Task Throughput_of_one_GiB_in_big_gets_over_loopback()
    {
        var source = new PatternPageSource();
        await using var server = new TcpPageServer(new PageServerOptions { EndPoint = Loopback, Source = source });
        server.Start();
        using var remote = new RemotePageSource(server.LocalEndPoint);
        using var channel = remote.OpenChannel();

        const int Get = 16 << 20;
        var buffer = new byte[Get];
        channel.Read(1, 0, buffer); // warm up
        var cpu0 = Process.GetCurrentProcess().TotalProcessorTime;
        var sw = Stopwatch.StartNew();
        for (ulong off = 0; off < 1UL << 30; off += Get)
            channel.Read(1, 0x1000_0000 + off, buffer);
        sw.Stop();
        Assert.Equal(-1, PatternPageSource.FirstBadPage(1, 0x1000_0000 + (1UL << 30) - Get, buffer));
        var cpu = Process.GetCurrentProcess().TotalProcessorTime - cpu0;
        output.WriteLine($"1 GiB in {Get >> 20} MiB GETs: {sw.Elapsed.TotalMilliseconds:F0} ms, {1024 / sw.Elapsed.TotalSeconds:F0} MB/s, " +
                         $"CPU {cpu.TotalMilliseconds:F0} ms (client + server + pattern source)");
    }
}

public class PipelinedGetTests(ITestOutputHelper output)
{
    [Fact]
    public async Task Pipelined_gets_come_back_in_order_and_move_one_GiB()
    {
        var source = new PatternPageSource();
        await using var server = new TcpPageServer(new PageServerOptions { EndPoint = new IPEndPoint(IPAddress.Loopback, 0), Source = source });
        server.Start();
        using var remote = new RemotePageSource(server.LocalEndPoint);
        var channel = (RemotePageChannel)remote.OpenChannel();

        const int Chunk = 2 << 20, Depth = 3;
        const ulong Base = 0x2000_0000;
        var buffers = Enumerable.Range(0, Depth).Select(_ => new byte[Chunk]).ToArray();
        int total = (1 << 30) / Chunk, sent = 0, done = 0;
        var sw = Stopwatch.StartNew();
        while (sent < Depth) { channel.Request(7, Base + (ulong)sent * Chunk, Chunk / 4096); sent++; }
        while (done < total)
        {
            var buf = buffers[done % Depth];
            channel.Receive(7, Base + (ulong)done * Chunk, buf);
            if (done % 97 == 0 || done == total - 1)
                Assert.Equal(-1, PatternPageSource.FirstBadPage(7, Base + (ulong)done * Chunk, buf));
            done++;
            if (sent < total) { channel.Request(7, Base + (ulong)sent * Chunk, Chunk / 4096); sent++; }
        }
        sw.Stop();
        Assert.Equal(0, channel.Outstanding);
        output.WriteLine($"1 GiB in {Chunk >> 20} MiB GETs, {Depth} in flight: {sw.Elapsed.TotalMilliseconds:F0} ms, {1024 / sw.Elapsed.TotalSeconds:F0} MB/s");

        // Out-of-order takes are refused, and plain Read refuses to mix with outstanding requests.
        channel.Request(7, 0x1000, 1);
        Assert.Throws<InvalidOperationException>(() => channel.Receive(7, 0x2000, new byte[4096]));
        Assert.Throws<InvalidOperationException>(() => channel.Read(7, 0x2000, new byte[4096]));
        var page = new byte[4096];
        channel.Receive(7, 0x1000, page);
        Assert.Equal(-1, PatternPageSource.FirstBadPage(7, 0x1000, page));
        channel.Dispose();
    }
}
