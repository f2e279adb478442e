using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Crisp.Integration.Tests.Remote;
using Crisp.Integration.Tests.Support;
using Crisp.Native;
using Crisp.TestSupport;
using Xunit;
using static Crisp.Integration.Tests.Remote.RemoteUtil;

namespace Crisp.Integration.Tests.Lazy;

/// <summary>
/// `crisp lazy-pages` and `crisp page-server` as a user runs them: whatever peer they wait for and
/// does not come, they end after --peer-timeout with one clear line and exit 1; SIGTERM and
/// SIGINT end them and leave no socket behind.
/// </summary>
public sealed class NothingWaitsForeverTests
{
    [Fact]
    public void Lazy_pages_with_no_restore_gives_up_after_its_peer_timeout()
    {
        using var dir = new TempDir();
        var sw = Stopwatch.StartNew();
        var r = CrispCli.Run(dir, TimeSpan.FromSeconds(60), "lazy-pages", "-D", dir.Path, "--peer-timeout", "2");
        Assert.True(r.ExitCode == 1, r.ToString());
        Assert.True(sw.Elapsed >= TimeSpan.FromSeconds(2), $"gave up after {sw.Elapsed}, before its timeout");
        Assert.Contains("no restore connected to", r.Stderr);
        Assert.Contains("within 2 s", r.Stderr);
        Assert.False(File.Exists(dir["lazy-pages.socket"]), "the socket file was left behind");
    }

    [Fact]
    public void Lazy_pages_with_no_page_server_gives_up_after_its_peer_timeout_without_listening()
    {
        using var dir = new TempDir();
        var r = CrispCli.Run(dir, TimeSpan.FromSeconds(60), "lazy-pages", "-D", dir.Path, "--page-server",
            "--address", "127.0.0.1", "--port", S(LoopbackPort.Unused()), "--peer-timeout", "2");
        Assert.True(r.ExitCode == 1, r.ToString());
        Assert.Contains("the page source could not be reached within 2 s", r.Stderr);
        Assert.Contains("ConnectionRefused", r.Stderr);
        Assert.False(File.Exists(dir["lazy-pages.socket"]));
    }

    [Theory]
    [InlineData(LibC.SIGTERM)]
    [InlineData(LibC.SIGINT)]
    public void Lazy_pages_ends_on_a_stop_signal_and_removes_its_socket(int signal)
    {
        using var dir = new TempDir();
        using var lazy = new BackgroundCrisp(dir, "lazy", "lazy-pages", "-D", dir.Path);
        Assert.True(Poll.Until(() => File.Exists(dir["lazy-pages.socket"]) || lazy.Exited, 30_000), lazy.Output);
        lazy.Terminate(signal);
        Assert.Equal(1, lazy.WaitExit(TimeSpan.FromSeconds(30)));
        Assert.Contains("stopped before any restore handed over a process", Poll.ReadFile(lazy.Stderr));
        Assert.False(File.Exists(dir["lazy-pages.socket"]), "the socket file was left behind");
    }

    [Fact]
    public void Page_server_with_no_client_gives_up_after_its_peer_timeout()
    {
        using var dir = new TempDir();
        var sw = Stopwatch.StartNew();
        var r = CrispCli.Run(dir, TimeSpan.FromSeconds(60), "page-server", "--lazy-pages", "-D", dir.Path,
            "--address", "127.0.0.1", "--port", "0", "--peer-timeout", "2");
        Assert.True(r.ExitCode == 1, r.ToString());
        Assert.True(sw.Elapsed >= TimeSpan.FromSeconds(2), $"gave up after {sw.Elapsed}, before its timeout");
        Assert.Contains("no client came to 127.0.0.1:", r.Stderr);
        Assert.Contains("within 2 s", r.Stderr);
    }

    [Fact]
    public void Page_server_that_served_stops_when_idle_with_exit_0()
    {
        using var dir = new TempDir();
        using var server = new BackgroundCrisp(dir, "ps", "page-server", "--lazy-pages", "-D", dir.Path,
            "--address", "127.0.0.1", "--port", "0", "--peer-timeout", "2", "-v4", "-o", "ps.log");
        int port = server.Port();
        using (var c = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp))
            c.Connect(new IPEndPoint(IPAddress.Loopback, port)); // a client that comes and goes
        Assert.Equal(0, server.WaitExit(TimeSpan.FromSeconds(30)));
        Assert.Contains("no new client for 2 s since the last session; stopping", Poll.ReadFile(dir["ps.log"]));
    }

    [Theory]
    [InlineData(LibC.SIGTERM)]
    [InlineData(LibC.SIGINT)]
    public void Page_server_ends_on_a_stop_signal(int signal)
    {
        using var dir = new TempDir();
        using var server = new BackgroundCrisp(dir, "ps", "page-server", "--lazy-pages", "-D", dir.Path, "--address", "127.0.0.1", "--port", "0");
        server.Port();
        server.Terminate(signal);
        Assert.Equal(0, server.WaitExit(TimeSpan.FromSeconds(30)));
    }
}

internal static class LoopbackPort
{
    /// <summary>A loopback TCP port nothing listens on now (the kernel's pick for a bind to port 0, released at once).</summary>
    public static int Unused()
    {
        using var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        s.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return ((IPEndPoint)s.LocalEndPoint!).Port;
    }

    /// <summary>
    /// A loopback TCP port nothing is bound to now, below the kernel's ephemeral range: a server
    /// killed by a dump and restored on it cannot find it taken meanwhile by the local end of some
    /// other test's outgoing connection (which the kernel picks from that range).
    /// </summary>
    public static int OutsideEphemeral()
    {
        int low = 32768;
        try { low = int.Parse(File.ReadAllText("/proc/sys/net/ipv4/ip_local_port_range").Split('\t', ' ')[0]); }
        catch (Exception e) when (e is IOException or FormatException) { }
        for (int attempt = 0; attempt < 200; attempt++)
        {
            int port = Random.Shared.Next(10000, Math.Max(10001, low));
            using var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            try { s.Bind(new IPEndPoint(IPAddress.Loopback, port)); return port; }
            catch (SocketException) { }
        }
        throw new InvalidOperationException($"no free loopback port between 10000 and {low}");
    }
}
