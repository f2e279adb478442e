using System.Net;
using System.Net.Sockets;
using Crisp.PageServer.Client;
using Crisp.PageServer.Server;
using Xunit;
using Xunit.Abstractions;

namespace Crisp.PageServer.Tests;

/// <summary>
/// A page server takes whatever a network peer sends: random and mutated CRIU headers (commands,
/// page counts up to 2^64, addresses, ids), cut off anywhere, in receive and lazy mode at once.
/// Each such connection ends (the server closes it, or the peer hangs up) and the server goes on:
/// after every 50 storms, and at the end, a good client is still served the right pages.
/// Fixed seed in the suite; CRISP_FUZZ_SECONDS and CRISP_FUZZ_SEED for longer runs.
/// </summary>
[Trait("Category", "Unit")]
public sealed class WireFuzzTests(ITestOutputHelper output)
{
    private static readonly ulong[] Extremes = [0, 1, 2, 0xFFF, 0x1000, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff, 1UL << 32, 1UL << 40, ulong.MaxValue >> 12, ulong.MaxValue];
    private static readonly uint[] Commands = [1, 2, 3, 4, 5, 6, 7, 0x1023, 0x1024, 0x10007, 0xffff, 0];

    [Fact]
    public async Task Garbage_and_mutated_headers_never_stop_a_page_server_in_either_mode()
    {
        double seconds = double.TryParse(Environment.GetEnvironmentVariable("CRISP_FUZZ_SECONDS"), out var s) ? s : 1.0;
        var rng = new Random(int.TryParse(Environment.GetEnvironmentVariable("CRISP_FUZZ_SEED"), out var e) ? e : 7);
        var source = new PatternPageSource();
        await using var server = new TcpPageServer(new PageServerOptions
        {
            EndPoint = new IPEndPoint(IPAddress.Loopback, 0), Source = source, Sink = new MemoryPagemapSink(),
        });
        server.Start();
        var clock = System.Diagnostics.Stopwatch.StartNew();
        int connections = 0;
        while (connections < 200 || clock.Elapsed.TotalSeconds < seconds)
        {
            using (var c = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp))
            {
                c.Connect(server.LocalEndPoint);
                c.ReceiveTimeout = 2000;
                var bytes = Storm(rng);
                try { c.Send(bytes); }
                catch (SocketException) { } // the server may close first: that is an answer
                c.Shutdown(SocketShutdown.Send);
                // Drain what comes back until the server ends the connection. A GET may legitimately
                // ask for up to 2^36 pages, which the server streams chunk by chunk: past 16 MiB this
                // client has seen enough and hangs up, as a peer may at any point.
                var buf = new byte[64 << 10];
                long got = 0;
                try
                {
                    int n;
                    while (got < 16 << 20 && (n = c.Receive(buf)) > 0) got += n;
                }
                catch (SocketException x) when (x.SocketErrorCode is SocketError.ConnectionReset or SocketError.TimedOut)
                {
                    // TimedOut: the server waits for the rest of a message the storm cut short, as a
                    // server does; the connection is ours to drop.
                }
            }
            connections++;
            if (connections % 50 == 0) AssertStillServes(server);
        }
        AssertStillServes(server);
        output.WriteLine($"{connections} garbage connections in {clock.Elapsed.TotalSeconds:F1} s; the server still serves");
    }

    private static void AssertStillServes(TcpPageServer server)
    {
        using var remote = new RemotePageSource(server.LocalEndPoint);
        using var ch = remote.OpenChannel();
        var page = new byte[3 * 4096];
        ch.Read(4242, 0x7f00_0000_3000, page);
        Assert.Equal(-1, PatternPageSource.FirstBadPage(4242, 0x7f00_0000_3000, page));
    }

    /// <summary>One to six 32-byte headers {u32 cmd, u32 pad, u64 nr_pages, u64 vaddr, u64 dst_id}, some followed by bytes, the whole maybe cut.</summary>
    private static byte[] Storm(Random rng)
    {
        var ms = new MemoryStream();
        int headers = 1 + rng.Next(6);
        for (int i = 0; i < headers; i++)
        {
            var h = new byte[32];
            if (rng.Next(4) == 0) rng.NextBytes(h);
            else
            {
                BitConverter.TryWriteBytes(h.AsSpan(0), Commands[rng.Next(Commands.Length)] | (rng.Next(3) == 0 ? (uint)rng.Next() << 16 : 0));
                BitConverter.TryWriteBytes(h.AsSpan(8), rng.Next(2) == 0 ? Extremes[rng.Next(Extremes.Length)] : (ulong)rng.Next(64));
                BitConverter.TryWriteBytes(h.AsSpan(16), rng.Next(2) == 0 ? Extremes[rng.Next(Extremes.Length)] : 0x7f00_0000_0000UL + ((ulong)rng.Next(1 << 20) << 12));
                BitConverter.TryWriteBytes(h.AsSpan(24), rng.Next(2) == 0 ? Extremes[rng.Next(Extremes.Length)] : ((ulong)rng.Next(5000) << 8) | 1);
            }
            ms.Write(h);
            if (rng.Next(3) == 0) ms.Write(new byte[rng.Next(3 * 4096)]);
        }
        var all = ms.ToArray();
        return rng.Next(3) == 0 ? all[..rng.Next(all.Length + 1)] : all;
    }
}
