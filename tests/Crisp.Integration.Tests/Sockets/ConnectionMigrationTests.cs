using System.Globalization;
using System.Text.RegularExpressions;
using Crisp.Integration.Tests.Remote;
using Crisp.Native;
using Crisp.TestSupport;
using Xunit;
using Xunit.Abstractions;
using static Crisp.TestSupport.TestProcesses;
using static Crisp.Integration.Tests.Support.Commands;

namespace Crisp.Integration.Tests.Sockets;

/// <summary>
/// `crisp migrate --tcp-established --move-address` between two network namespaces A and B, each
/// joined by a veth pair to a bridge in a third, C, where the client lives. redis-server listens
/// on a service address of A; tests/workloads/redisclient.py in C holds one connection to it and
/// sends a command every 10 ms, checking each reply. The migration moves redis and its address to
/// B (the agent runs there); the client must never notice more than a pause: same connection, every
/// reply right, every key there. Afterwards no lock table is left in A or B, and a counter in C
/// proves the old socket in A sent neither FIN nor RST. The namespaces are dual-stack: each test
/// moves either the IPv4 service address or the IPv6 one (added without DAD).
/// </summary>
[Collection("tcp")]
public sealed class ConnectionMigrationTests : IDisposable
{
    private const string Ip = "/usr/sbin/ip";
    private const int RedisPort = 6390;
    private readonly ITestOutputHelper _out;
    private readonly TempDir _dir = new();
    private readonly string _tag = Guid.NewGuid().ToString("N")[..6];
    private readonly string _a, _b, _c, _net, _net6;
    private bool _v6;   // which service address this test moves
    private readonly List<IDisposable> _owned = [];

    public ConnectionMigrationTests(ITestOutputHelper output)
    {
        _out = output;
        _a = $"cm-a-{_tag}";
        _b = $"cm-b-{_tag}";
        _c = $"cm-c-{_tag}";
        _net = $"10.{200 + Random.Shared.Next(50)}.{Random.Shared.Next(250)}";
        _net6 = $"fd{Random.Shared.Next(256):x2}:{Random.Shared.Next(65536):x}:{Random.Shared.Next(65536):x}:1::";
        try
        {
            foreach (var ns in new[] { _a, _b, _c })
            {
                Sh(Ip, "netns", "add", ns);
                Sh(Ip, "-n", ns, "link", "set", "lo", "up");
            }
            Sh(Ip, "-n", _c, "link", "add", "br0", "type", "bridge");
            Sh(Ip, "-n", _c, "addr", "add", $"{_net}.1/24", "dev", "br0");
            Sh(Ip, "-n", _c, "-6", "addr", "add", $"{_net6}1/64", "dev", "br0", "nodad");
            Sh(Ip, "-n", _c, "link", "set", "br0", "up");
            foreach (var (ns, side, own) in new[] { (_a, "a", 2), (_b, "b", 3) })
            {
                string dev = Dev(side), peer = $"c{side}{_tag}";
                Sh(Ip, "link", "add", dev, "type", "veth", "peer", "name", peer);
                Sh(Ip, "link", "set", dev, "netns", ns);
                Sh(Ip, "link", "set", peer, "netns", _c);
                Sh(Ip, "-n", _c, "link", "set", peer, "master", "br0");
                Sh(Ip, "-n", _c, "link", "set", peer, "up");
                Sh(Ip, "-n", ns, "addr", "add", $"{_net}.{own}/24", "dev", dev);
                Sh(Ip, "-n", ns, "-6", "addr", "add", $"{_net6}{own}/64", "dev", dev, "nodad");
                Sh(Ip, "-n", ns, "link", "set", dev, "up");
            }
            // The service addresses: a /32 and a /128 beside A's own, so that deleting one touches nothing else.
            Sh(Ip, "-n", _a, "addr", "add", $"{Service4}/32", "dev", Dev("a"));
            Sh(Ip, "-n", _a, "-6", "addr", "add", $"{Service6}/128", "dev", Dev("a"), "nodad");
            // Counts FIN and RST from the service addresses as C receives them.
            NftIn(_c, $"add table inet watch\nadd chain inet watch in {{ type filter hook input priority 0; }}\n" +
                      $"add rule inet watch in ip saddr {Service4} tcp flags & (fin | rst) != 0 counter\n" +
                      $"add rule inet watch in ip6 saddr {Service6} tcp flags & (fin | rst) != 0 counter\n");
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    private string Service4 => $"{_net}.10";
    private string Service6 => $"{_net6}10";
    private string Service => _v6 ? Service6 : Service4;
    private string AgentAddr => $"{_net}.3";
    private string Dev(string side) => $"{side}{_tag}";

    public void Dispose()
    {
        for (int i = _owned.Count - 1; i >= 0; i--) _owned[i].Dispose();
        foreach (var ns in new[] { _a, _b, _c }) Run(Ip, "netns", "del", ns);
        _dir.Dispose();
    }

    private T Own<T>(T d) where T : IDisposable
    {
        _owned.Add(d);
        return d;
    }

    private ChildProcess InNs(string ns, string log, params string[] argv) =>
        Own(ChildProcess.Start(Ip, ["netns", "exec", ns, .. argv], log, newSession: true));

    private ChildProcess StartRedis()
    {
        var redis = InNs(_a, _dir["redis.log"], "/usr/bin/redis-server", "--port", RedisPort.ToString(CultureInfo.InvariantCulture),
            "--bind", Service, "--save", "", "--appendonly", "no", "--protected-mode", "no");
        Assert.True(Poll.Until(() => Poll.ReadFile(_dir["redis.log"]).Contains("Ready to accept connections"), 20_000),
            $"redis-server did not start: {Poll.ReadFile(_dir["redis.log"])}");
        return redis;
    }

    private ChildProcess StartClient(int keys)
    {
        var client = InNs(_c, _dir["client.log"], "/usr/bin/python3", Path.Combine(Repo.Workloads, "redisclient.py"),
            Service, RedisPort.ToString(CultureInfo.InvariantCulture), keys.ToString(CultureInfo.InvariantCulture), _dir["stop"]);
        Assert.True(Poll.Until(() => Replies() >= 50 || ClientEnded(), 60_000), $"the client does not run: {ClientLog}");
        return client;
    }

    private string ClientLog => Poll.ReadFile(_dir["client.log"]);
    private bool ClientEnded() => ClientLog.Contains("client done") || ClientLog.Contains("client bad");

    private int Replies()
    {
        var m = Regex.Matches(ClientLog, @"replies (\d+)");
        return m.Count == 0 ? 0 : int.Parse(m[^1].Groups[1].Value, CultureInfo.InvariantCulture);
    }

    /// <summary>The client goes on: 100 more replies (a second of them), still on its connection.</summary>
    private void AssertClientContinues()
    {
        int before = Replies();
        Assert.True(Poll.Until(() => Replies() >= before + 100 || ClientEnded(), 60_000), $"the client stopped at {before} replies: {ClientLog}");
        Assert.False(ClientEnded(), $"the client ended: {ClientLog}");
    }

    /// <summary>Stops the client; it reads every key back. Returns its largest gap between replies, in ms.</summary>
    private double FinishClient(int keys)
    {
        File.WriteAllText(_dir["stop"], "");
        Assert.True(Poll.Until(ClientEnded, 60_000), $"the client did not finish: {ClientLog}");
        var done = Regex.Match(ClientLog, @"client done replies (\d+) max_gap_ms ([\d.]+) keys (\d+)");
        Assert.True(done.Success, $"the client failed: {ClientLog}");
        Assert.Equal(keys, int.Parse(done.Groups[3].Value, CultureInfo.InvariantCulture));
        return double.Parse(done.Groups[2].Value, CultureInfo.InvariantCulture);
    }

    private BackgroundCrisp StartAgent() =>
        Own(new BackgroundCrisp(_dir, "agent", [Ip, "netns", "exec", _b, .. BackgroundCrisp.InNewPidNs],
            ["agent", "--listen", $"{AgentAddr}:0", "--insecure", "--move-address-dev", Dev("b"), "-o", _dir["agent.log"], "-v", "4"]));

    private BackgroundCrisp Migrate(int pid, int agentPort, string networkLock = "nftables", bool preCopy = false) =>
        Own(new BackgroundCrisp(_dir, "migrate", [Ip, "netns", "exec", _a],
            ["migrate", pid.ToString(CultureInfo.InvariantCulture), "--to", $"{AgentAddr}:{agentPort}", "--insecure", "--json",
             "--tcp-established", "--move-address", Service, "--network-lock", networkLock, .. (preCopy ? new[] { "--pre-copy" } : [])]));

    private bool HasService(string ns, string side) =>
        Run(Ip, "-n", ns, _v6 ? "-6" : "-4", "addr", "show", "dev", Dev(side)).Output
            .Contains(_v6 ? $"inet6 {Service6}/128" : $"inet {Service4}/32", StringComparison.Ordinal);

    /// <summary>Neither an nftables CRIU-* table nor an iptables rule with the lock's mark (0xc114) is left in <paramref name="ns"/>.</summary>
    private void AssertNoLock(string ns)
    {
        Assert.DoesNotContain("CRIU-", Run(Ip, "netns", "exec", ns, "/usr/sbin/nft", "list", "ruleset").Output);
        foreach (var tool in new[] { "/usr/sbin/iptables", "/usr/sbin/ip6tables" })
        {
            var (code, rules) = Run(Ip, "netns", "exec", ns, tool, "-w", "-S");
            Assert.True(code == 0, $"{tool} -S: {rules}");
            Assert.DoesNotContain("0xc114", rules);
        }
    }

    private long FinOrRstSeen()
    {
        var m = Regex.Matches(Run(Ip, "netns", "exec", _c, "/usr/sbin/nft", "list", "table", "inet", "watch").Output, @"counter packets (\d+)");
        Assert.True(m.Count == 2, "no counters in C's watch table");
        return m.Sum(c => long.Parse(c.Groups[1].Value, CultureInfo.InvariantCulture));
    }

    [Theory]
    [InlineData("nftables", false, false)]
    [InlineData("iptables", false, false)]
    [InlineData("nftables", true, false)]
    [InlineData("nftables", false, true)]
    [InlineData("iptables", false, true)]
    public void Redis_moves_to_another_namespace_with_its_address_and_its_client_keeps_the_connection(string networkLock, bool preCopy, bool v6)
    {
        const int keys = 20_000;
        _v6 = v6;
        var redis = StartRedis();
        StartClient(keys);
        var agent = StartAgent();
        int port = agent.Port();
        var migrate = Migrate(redis.Pid, port, networkLock, preCopy);
        Assert.True(migrate.WaitExit(TimeSpan.FromSeconds(180)) == 0, migrate.Output + Poll.ReadFile(_dir["agent.log"]));
        Assert.True(Poll.Until(() => !redis.IsAlive, 10_000), "the source redis is still alive");

        AssertClientContinues();
        // The agent announced the address (gratuitous ARP, or IPv6's unsolicited neighbour advertisement) without an error.
        Assert.DoesNotContain("announcing", Poll.ReadFile(_dir["agent.log"]));
        Assert.False(HasService(_a, "a"), "the service address is still on A");
        Assert.True(HasService(_b, "b"), "the service address is not on B");
        AssertNoLock(_a);
        AssertNoLock(_b);
        Assert.Equal(0, FinOrRstSeen());
        double gap = FinishClient(keys);
        string summary = Poll.ReadFile(migrate.Stdout).Split('\n')[0];
        string how = $"{(v6 ? "IPv6" : "IPv4")}, --network-lock {networkLock}{(preCopy ? ", --pre-copy" : "")}";
        _out.WriteLine($"redis A→B with a live connection ({keys} keys, {how}): largest gap between replies {gap:F1} ms; {summary}");
        Console.WriteLine($"connection migrate ({how}): largest client gap {gap:F1} ms; {summary}");
    }

    [Theory]
    [InlineData("nftables", false)]
    [InlineData("nftables", true)]
    [InlineData("iptables", true)]
    public void A_restore_that_fails_after_the_lock_resumes_the_source_with_its_address_and_connection_and_leaves_no_rule(string networkLock, bool v6)
    {
        const int keys = 2_000;
        _v6 = v6;
        var redis = StartRedis();
        StartClient(keys);
        // B's port is taken: the restore locks the connection in B, then cannot bind redis's listener.
        var squatter = InNs(_b, _dir["squatter.log"], "/usr/bin/python3", "-c",
            $"import socket, time\ns = socket.socket(socket.{(v6 ? "AF_INET6" : "AF_INET")})\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n" +
            $"s.bind(('{(v6 ? "::" : "0.0.0.0")}', {RedisPort}))\ns.listen()\nprint('bound', flush=True)\ntime.sleep(3600)\n");
        Assert.True(Poll.Until(() => Poll.ReadFile(_dir["squatter.log"]).Contains("bound"), 20_000), "the squatter did not bind");
        var agent = StartAgent();
        int port = agent.Port();
        var migrate = Migrate(redis.Pid, port, networkLock);
        Assert.True(migrate.WaitExit(TimeSpan.FromSeconds(180)) == 1, migrate.Output + Poll.ReadFile(_dir["agent.log"]));
        Assert.Contains("resumed", Poll.ReadFile(migrate.Stderr));
        Assert.Contains("create sockets", Poll.ReadFile(migrate.Stderr));
        Assert.True(redis.IsAlive, "the source was not resumed");

        AssertClientContinues();
        Assert.True(HasService(_a, "a"), "the service address did not come back to A");
        Assert.False(HasService(_b, "b"), "the service address stayed on B");
        AssertNoLock(_a);
        AssertNoLock(_b);
        Assert.Equal(0, FinOrRstSeen());
        double gap = FinishClient(keys);
        Assert.False(agent.Exited, "the agent stopped after a failed migration");
        squatter.Dispose();
        _out.WriteLine($"failed restore ({(v6 ? "IPv6" : "IPv4")}, --network-lock {networkLock}): the source resumed; largest client gap {gap:F1} ms");
    }

    private void NftIn(string ns, string script)
    {
        string f = _dir[$"nft-{Guid.NewGuid():N}"];
        File.WriteAllText(f, script);
        Sh(Ip, "netns", "exec", ns, "/usr/sbin/nft", "-f", f);
    }
}
