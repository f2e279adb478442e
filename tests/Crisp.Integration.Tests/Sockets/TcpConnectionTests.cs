using Crisp.Images;
using Crisp.Integration.Tests.Lazy;
using Crisp.Integration.Tests.Support;
using Crisp.Native;
using Crisp.TestSupport;
using Xunit;
using static Crisp.TestSupport.TestProcesses;
using static Crisp.Integration.Tests.Support.Commands;

namespace Crisp.Integration.Tests.Sockets;

/// <summary>
/// Established TCP connections (--tcp-established), each test in a network namespace of its own:
/// tests/workloads/tcpstream.c sends a byte stream each way and checks every byte it gets by its
/// offset, so a lost, duplicated or reordered byte fails the program itself. The network lock is
/// judged by the namespace's ruleset after every run: no CRIU table may stay.
/// </summary>
[Collection("tcp")]
public sealed class TcpConnectionTests : NetnsTest
{
    private readonly string _bin;

    public TcpConnectionTests() : base("crisp-tcp")
    {
        _bin = Gcc.Workload("tcpstream");
    }

    private int Start(string log, params string[] args)
    {
        int pid = SpawnLogged(log, [Ip, "netns", "exec", Ns, "/usr/bin/env", .. args]);
        Children.Add(pid);
        return pid;
    }

    private string Ruleset() => Run(Ip, "netns", "exec", Ns, "/usr/sbin/nft", "list", "ruleset").Output;

    private void AssertNoLock() => Assert.DoesNotContain("CRIU-", Ruleset());

    /// <summary>A server (to be dumped) and a client outside the tree; returns the server's pid once both stream.</summary>
    private int ServerAndClient(string addr, string slog, string clog, long total, params string[] serverEnv)
    {
        int server = Start(slog, [.. serverEnv, _bin, "server", addr, "0", total.ToString(), slog]);
        string port = WaitForLine(slog, l => l.StartsWith("server listening ")).Split(' ')[2];
        Start(clog, _bin, "client", addr, port, total.ToString(), clog);
        WaitForLine(slog, l => l.StartsWith("server progress"));
        WaitForLine(clog, l => l.StartsWith("client progress"));
        return server;
    }

    /// <summary>Drops what reaches the server's port for a moment, so that what it sent stays unacknowledged.</summary>
    private void HoldAcks(int serverPid, string slog)
    {
        string port = WaitForLine(slog, l => l.StartsWith("server listening ")).Split(' ')[2];
        NftIn($"add table inet holdacks\nadd chain inet holdacks in {{ type filter hook input priority -10; }}\nadd rule inet holdacks in tcp dport {port} drop\n");
        int before = Lines(slog).Length;
        WaitForLine(slog, l => l.StartsWith("server progress"), skip: before);   // it goes on sending into the unacknowledged window
    }

    private void NftIn(string script)
    {
        string f = TestDir[$"nft-{Guid.NewGuid():N}"];
        File.WriteAllText(f, script);
        Sh(Ip, "netns", "exec", Ns, "/usr/sbin/nft", "-f", f);
    }

    private unsafe void Reap(int pid)
    {
        int st;
        LibC.waitpid(pid, &st, 0);
        Children.Remove(pid);
    }

    private void WaitDone(string log, string role) =>
        Assert.Contains($"{role} done", WaitForLine(log, l => l.StartsWith($"{role} done") || l.StartsWith($"{role} bad") || l.StartsWith($"{role} error"), timeoutMs: 90_000));

    private int RestoredPid(string pidfile)
    {
        int pid = int.Parse(File.ReadAllText(pidfile).Trim());
        Restored.Add(pid);
        return pid;
    }

    [Theory]
    [InlineData("127.0.0.1", false)]
    [InlineData("::1", false)]
    [InlineData("127.0.0.1", true)]
    public void A_connection_to_a_peer_outside_the_tree_keeps_both_byte_streams_across_dump_and_restore(string addr, bool lazy)
    {
        string slog = TestDir["server.log"], clog = TestDir["client.log"], img = TestDir["img"];
        int server = ServerAndClient(addr, slog, clog, 6_000_000);
        HoldAcks(server, slog);
        var d = Crisp("dump", "-t", server.ToString(), "-D", img, "--tcp-established");
        Assert.True(d.ExitCode == 0, d.ToString());
        Reap(server);
        Run(Ip, "netns", "exec", Ns, "/usr/sbin/nft", "delete", "table", "inet", "holdacks");
        // The dump's lock holds the connection until the restore: the peer's packets are dropped, not answered.
        Assert.Contains("CRIU-", Ruleset());
        var stream = new ImageDir(img).ReadTcpStream(uint.Parse(Path.GetFileNameWithoutExtension(
            Directory.GetFiles(img, "tcp-stream-*.img").Single())["tcp-stream-".Length..], System.Globalization.NumberStyles.HexNumber));
        Assert.True(stream.Entry.OutqLen > stream.Entry.UnsqLen, $"no unacknowledged data at dump time: outq {stream.Entry.OutqLen}, unsent {stream.Entry.UnsqLen}");

        LazyDaemon? daemon = lazy ? new LazyDaemon(img, TestDir.Path) : null;
        try
        {
            string pidfile = TestDir["pid"];
            string[] args = ["restore", "-D", img, "--tcp-established", "-d", "--pidfile", pidfile];
            var r = Crisp(lazy ? [.. args, "--lazy-pages"] : args);
            Assert.True(r.ExitCode == 0, r.ToString());
            RestoredPid(pidfile);
            AssertNoLock();
            WaitDone(slog, "server");
            WaitDone(clog, "client");
        }
        finally { daemon?.Dispose(); }
    }

    [Fact]
    public void Both_ends_in_the_tree_come_back_connected_to_each_other()
    {
        string log = TestDir["pair.log"], img = TestDir["img"];
        int pid = Start(log, _bin, "pair", "127.0.0.1", "0", "4000000", log);
        WaitForLine(log, l => l.StartsWith("client progress"));
        WaitForLine(log, l => l.StartsWith("server progress"));
        var d = Crisp("dump", "-t", pid.ToString(), "-D", img, "--tcp-established");
        Assert.True(d.ExitCode == 0, d.ToString());
        Reap(pid);
        Assert.Equal(2, Directory.GetFiles(img, "tcp-stream-*.img").Length);
        string pidfile = TestDir["pid"];
        var r = Crisp("restore", "-D", img, "--tcp-established", "-d", "--pidfile", pidfile);
        Assert.True(r.ExitCode == 0, r.ToString());
        RestoredPid(pidfile);
        AssertNoLock();
        Assert.Equal("pair exit server=0 client=0", WaitForLine(log, l => l.StartsWith("pair exit"), timeoutMs: 90_000));
    }

    [Fact]
    public void Without_tcp_established_the_dump_is_refused_naming_the_connection_and_the_tree_goes_on()
    {
        string slog = TestDir["server.log"], clog = TestDir["client.log"];
        int server = ServerAndClient("127.0.0.1", slog, clog, 16_000_000);
        var d = Crisp("dump", "-t", server.ToString(), "-D", TestDir["img"]);
        Assert.Equal(1, d.ExitCode);
        Assert.Contains("ESTABLISHED", d.Stderr);
        Assert.Contains("--tcp-established", d.Stderr);
        AssertNoLock();
        WaitDone(slog, "server");
        WaitDone(clog, "client");
    }

    [Fact]
    public void A_failed_restore_removes_the_lock()
    {
        string slog = TestDir["server.log"], clog = TestDir["client.log"], img = TestDir["img"];
        int server = ServerAndClient("127.0.0.1", slog, clog, 16_000_000);
        var d = Crisp("dump", "-t", server.ToString(), "-D", img, "--tcp-established");
        Assert.True(d.ExitCode == 0, d.ToString());
        Reap(server);
        Assert.Contains("CRIU-", Ruleset());
        foreach (var f in Directory.GetFiles(img, "pages-*.img")) File.WriteAllBytes(f, []);   // memory that cannot be restored
        var r = Crisp("restore", "-D", img, "--tcp-established", "-d");
        Assert.True(r.ExitCode == 3, r.ToString()); // the pages are short: bad images, the documented exit code 3
        AssertNoLock();
    }

    [Fact]
    public void Tcp_close_at_restore_gives_the_program_a_closed_socket_and_removes_the_lock()
    {
        string slog = TestDir["server.log"], clog = TestDir["client.log"], img = TestDir["img"];
        int server = ServerAndClient("127.0.0.1", slog, clog, 16_000_000);
        var d = Crisp("dump", "-t", server.ToString(), "-D", img, "--tcp-established");
        Assert.True(d.ExitCode == 0, d.ToString());
        Reap(server);
        string pidfile = TestDir["pid"];
        int before = Lines(slog).Length;
        var r = Crisp("restore", "-D", img, "--tcp-close", "-d", "--pidfile", pidfile);
        Assert.True(r.ExitCode == 0, r.ToString());
        RestoredPid(pidfile);
        AssertNoLock();
        Assert.StartsWith("server error", WaitForLine(slog, l => l.StartsWith("server error") || l.StartsWith("server done"), skip: before, timeoutMs: 30_000));
    }
}
