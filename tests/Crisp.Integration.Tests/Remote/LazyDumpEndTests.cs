using System.Net;
using System.Net.Sockets;
using Crisp.Integration.Tests.Support;
using Crisp.Native;
using Crisp.TestSupport;
using Crisp.PageServer.Client;
using Xunit;
using static Crisp.Integration.Tests.Remote.RemoteUtil;

namespace Crisp.Integration.Tests.Remote;

/// <summary>
/// Nothing waits forever: how `crisp dump --lazy-pages` ends when its destination never asks,
/// when its tree dies, and on SIGTERM, each with the outcome the README documents.
/// </summary>
public class LazyDumpEndTests
{
    private static BackgroundCrisp StartLazyDump(TempDir dir, Memtouch w, params string[] extra) =>
        new(dir, "lazydump", ["dump", "-t", S(w.Pid), "-D", dir["img"], "--lazy-pages", "--address", "127.0.0.1", "--port", "0", .. extra]);

    private static void AssertRunsOn(Memtouch w)
    {
        Assert.StartsWith("check ok", w.Check(w.Pid));
        long n = w.Ticks().Last().N;
        Assert.True(Poll.Until(() => w.Ticks().Last().N > n + 3), "ticks stopped after the resumed lazy dump");
    }

    [Fact]
    public void A_destination_that_connects_but_never_asks_is_given_up_after_the_lazy_timeout_and_the_tree_resumes()
    {
        using var dir = new TempDir();
        using var w = new Memtouch(dir, mib: 4);
        using var dump = StartLazyDump(dir, w, "--lazy-timeout", "2");
        int port = dump.Port("lazy page server listening on");
        using var silent = new TcpClient();
        silent.Connect(IPAddress.Loopback, port);
        Assert.Equal(1, dump.WaitExit(TimeSpan.FromSeconds(30)));
        string err = Poll.ReadFile(dump.Stderr);
        Assert.Contains("asked for no page within 2 s", err);
        Assert.Contains("resumed", err);
        AssertRunsOn(w);
    }

    [Fact]
    public void A_tree_killed_while_frozen_ends_the_lazy_dump_with_a_failure()
    {
        using var dir = new TempDir();
        using var w = new Memtouch(dir, mib: 4);
        using var dump = StartLazyDump(dir, w);
        dump.Port("lazy page server listening on");
        LibC.kill(w.Pid, LibC.SIGKILL);
        Assert.Equal(1, dump.WaitExit(TimeSpan.FromSeconds(30)));
        Assert.Contains($"process {w.Pid} of the tree died while frozen", Poll.ReadFile(dump.Stderr));
    }

    [Fact]
    public void Sigterm_with_a_destination_connected_that_fetched_nothing_resumes_the_tree()
    {
        using var dir = new TempDir();
        using var w = new Memtouch(dir, mib: 4);
        using var dump = StartLazyDump(dir, w);
        int port = dump.Port("lazy page server listening on");
        using var silent = new TcpClient();
        silent.Connect(IPAddress.Loopback, port);
        dump.Terminate();
        Assert.Equal(1, dump.WaitExit(TimeSpan.FromSeconds(30)));
        string err = Poll.ReadFile(dump.Stderr);
        Assert.Contains("interrupted before any page was delivered", err);
        Assert.Contains("resumed", err);
        AssertRunsOn(w);
    }

    [Fact]
    public void Sigterm_after_a_page_was_delivered_kills_the_tree()
    {
        using var dir = new TempDir();
        using var w = new Memtouch(dir, mib: 4);
        using var dump = StartLazyDump(dir, w);
        int port = dump.Port("lazy page server listening on");
        using var source = new RemotePageSource(new IPEndPoint(IPAddress.Loopback, port));
        using (var ch = source.OpenChannel())
            ch.Read(w.Pid, w.Buffers[0].Address, new byte[4096]);
        dump.Terminate();
        Assert.Equal(1, dump.WaitExit(TimeSpan.FromSeconds(30)));
        Assert.Contains("interrupted after 1 of", Poll.ReadFile(dump.Stderr));
        Assert.True(Poll.Until(() => Gone(w.Pid)), "the source runs although a page of it was delivered");
    }
}
