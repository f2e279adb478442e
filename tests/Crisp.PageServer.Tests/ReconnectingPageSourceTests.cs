using Crisp.Native;
using System.Diagnostics;
using System.Net.Sockets;
using Crisp.Images;
using Crisp.PageServer.Client;
using Crisp.PageServer.Protocol;
using Xunit;

namespace Crisp.PageServer.Tests;

/// <summary>
/// ReconnectingPageSource's rules over a scripted inner source (each channel one "connection"
/// that can be broken): what was in flight is asked for again in order, answers are never
/// partial, an outage is bounded, a refusal is final.
/// </summary>
[Trait("Category", "Unit")]
public class ReconnectingPageSourceTests
{
    private const int Page = 4096;

    private static byte Pattern(ulong vaddr, int i) => (byte)((vaddr >> 12) * 31 + (ulong)i);

    /// <summary>A connection per channel; BreakAfter breaks it after that many more answers (before the next one completes).</summary>
    private sealed class ScriptedSource : IPageSource
    {
        public volatile bool Down;
        public int BreakAfter = int.MaxValue;
        public bool AlwaysBreak;
        public Exception? FailWith;
        public int Opened;
        public readonly List<(int Channel, ulong Vaddr)> Requests = new();

        public IPageChannel OpenChannel()
        {
            if (Down) throw new PageSourceException("cannot connect: ConnectionRefused", new SocketException((int)SocketError.ConnectionRefused));
            return new Conn(this, Interlocked.Increment(ref Opened));
        }

        public void Dispose() { }

        private sealed class Conn(ScriptedSource s, int id) : IPipelinedPageChannel
        {
            private readonly Queue<ulong> _q = new();
            private bool _dead;

            private void Answer(ulong vaddr, Span<byte> dest)
            {
                if (_dead) throw new PageSourceException("channel closed", new ObjectDisposedException("c"));
                if (s.FailWith is { } f) throw new PageSourceException(f.Message, f);
                // half an answer arrives, then the connection breaks
                for (int i = 0; i < dest.Length / 2; i++) dest[i] = Pattern(vaddr, i);
                if (s.AlwaysBreak || s.BreakAfter-- == 0)
                {
                    _dead = true;
                    throw new PageSourceException("the page server closed the connection", new PeerGoneException("EOF"));
                }
                for (int i = 0; i < dest.Length; i++) dest[i] = Pattern(vaddr, i);
            }

            public void Read(int pid, ulong vaddr, Span<byte> destination)
            {
                lock (s.Requests) s.Requests.Add((id, vaddr));
                Answer(vaddr, destination);
            }

            public void Request(int pid, ulong vaddr, int nrPages)
            {
                if (_dead) throw new PageSourceException("channel closed", new ObjectDisposedException("c"));
                lock (s.Requests) s.Requests.Add((id, vaddr));
                _q.Enqueue(vaddr);
            }

            public void Receive(int pid, ulong vaddr, Span<byte> destination)
            {
                Assert.Equal(_q.Dequeue(), vaddr);
                Answer(vaddr, destination);
            }

            public void Dispose() => _dead = true;
        }
    }

    private static void AssertPattern(ulong vaddr, byte[] buf)
    {
        for (int i = 0; i < buf.Length; i++)
            if (buf[i] != Pattern(vaddr, i)) Assert.Fail($"byte {i} of 0x{vaddr:x} is wrong");
    }

    [Fact]
    public void A_read_cut_halfway_is_asked_for_again_on_a_new_connection_and_arrives_whole()
    {
        var inner = new ScriptedSource { BreakAfter = 1 };
        using var source = new ReconnectingPageSource(inner, "test", TimeSpan.FromSeconds(5));
        using var ch = source.OpenChannel();
        var buf = new byte[4 * Page];
        ch.Read(1, 0x10000, buf);
        AssertPattern(0x10000, buf);
        ch.Read(1, 0x20000, buf); // breaks halfway: asked again on connection 2
        AssertPattern(0x20000, buf);
        Assert.Equal(2, inner.Opened);
        Assert.Equal(1, source.Reconnects);
        Assert.Equal([(1, 0x10000UL), (1, 0x20000UL), (2, 0x20000UL)], inner.Requests);
    }

    [Fact]
    public void Pipelined_requests_in_flight_are_asked_for_again_in_order()
    {
        var inner = new ScriptedSource { BreakAfter = 0 };
        using var source = new ReconnectingPageSource(inner, "test", TimeSpan.FromSeconds(5));
        var ch = (IPipelinedPageChannel)source.OpenChannel();
        ulong[] addrs = [0x1000, 0x9000, 0x22000];
        foreach (var a in addrs) ch.Request(7, a, 2);
        var buf = new byte[2 * Page];
        foreach (var a in addrs)
        {
            ch.Receive(7, a, buf);
            AssertPattern(a, buf);
        }
        Assert.Equal(2, inner.Opened);
        Assert.Equal(addrs.Select(a => (1, a)).Concat(addrs.Select(a => (2, a))), inner.Requests);
        ch.Dispose();
    }

    [Fact]
    public void A_source_that_stays_away_fails_the_request_after_the_timeout_with_a_clear_message()
    {
        var inner = new ScriptedSource { BreakAfter = 0 };
        var lines = new List<string>();
        using var source = new ReconnectingPageSource(inner, "page server X", TimeSpan.FromMilliseconds(600), Logger.Lines(lines.Add));
        using var ch = source.OpenChannel();
        inner.Down = true;
        var sw = Stopwatch.StartNew();
        var e = Assert.Throws<PageSourceException>(() => ch.Read(1, 0x1000, new byte[Page]));
        Assert.InRange(sw.ElapsedMilliseconds, 550, 3000);
        Assert.Contains("could not be re-established within 0.6 s", e.Message);
        Assert.Contains("reconnecting for up to 0.6 s", Assert.Single(lines));
        // the next request does not wait a whole timeout again for a source already given up
        sw.Restart();
        Assert.Throws<PageSourceException>(() => ch.Read(1, 0x2000, new byte[Page]));
        Assert.True(sw.ElapsedMilliseconds < 500, $"{sw.ElapsedMilliseconds} ms");
        // and once it is back, it is used again
        inner.Down = false;
        inner.BreakAfter = int.MaxValue;
        var buf = new byte[Page];
        ch.Read(1, 0x3000, buf);
        AssertPattern(0x3000, buf);
    }

    [Fact]
    public void A_refusal_is_final_and_not_retried()
    {
        var inner = new ScriptedSource { FailWith = new PageServerRefusedException("no pages for pid 1 at 0x1000") };
        using var source = new ReconnectingPageSource(inner, "test", TimeSpan.FromSeconds(30));
        using var ch = source.OpenChannel();
        var sw = Stopwatch.StartNew();
        var e = Assert.Throws<PageSourceException>(() => ch.Read(1, 0x1000, new byte[Page]));
        Assert.IsType<PageServerRefusedException>(e.InnerException);
        Assert.True(sw.ElapsedMilliseconds < 1000);
        Assert.Equal(1, inner.Opened);
    }

    [Fact]
    public void A_request_dropped_on_three_fresh_connections_in_a_row_is_given_up()
    {
        var inner = new ScriptedSource { AlwaysBreak = true };
        using var source = new ReconnectingPageSource(inner, "test", TimeSpan.FromSeconds(30));
        using var ch = source.OpenChannel();
        var e = Assert.Throws<PageSourceException>(() => ch.Read(1, 0x1000, new byte[Page]));
        Assert.Contains("on 3 fresh connections in a row", e.Message);
        Assert.Equal(1 + ReconnectingPageSource.MaxDropsPerRequest, inner.Opened);
    }

    [Fact]
    public void Cancellation_stops_a_reconnect_at_once()
    {
        var inner = new ScriptedSource { BreakAfter = 0 };
        using var cts = new CancellationTokenSource();
        using var source = new ReconnectingPageSource(inner, "test", TimeSpan.FromSeconds(30), cancel: cts.Token);
        using var ch = source.OpenChannel();
        inner.Down = true;
        cts.CancelAfter(300);
        var sw = Stopwatch.StartNew();
        var e = Assert.Throws<PageSourceException>(() => ch.Read(1, 0x1000, new byte[Page]));
        Assert.Contains("stopped while reconnecting", e.Message);
        Assert.True(sw.ElapsedMilliseconds < 3000, $"{sw.ElapsedMilliseconds} ms");
    }
}
