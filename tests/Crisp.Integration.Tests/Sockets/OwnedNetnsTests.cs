using System.Text.RegularExpressions;
using Crisp.Integration.Tests.Lazy;
using Crisp.Integration.Tests.Support;
using Crisp.Native;
using Crisp.TestSupport;
using Xunit;
using static Crisp.TestSupport.TestProcesses;
using static Crisp.Integration.Tests.Support.Commands;

namespace Crisp.Integration.Tests.Sockets;

/// <summary>
/// A tree that owns its network namespace (tests/workloads/netnsowner.c unshares it, sets lo, an
/// extra address, an MTU and firewall rules up as zdtm's socket-tcp-*-nfconntrack do, then runs
/// tcpstream.c's pair: both ends of a connection in the tree, each checking every byte it gets by
/// its offset). crisp itself runs in a namespace the test makes (the "host" here), so the host's
/// ruleset seen by the checks is this test's alone.
/// </summary>
[Collection("tcp")]
public sealed partial class OwnedNetnsTests : NetnsTest
{
    private const string Nft = "/usr/sbin/nft", Nsenter = "/usr/bin/nsenter";
    private const string Addr = "10.77.0.1";
    private readonly string _owner, _tcp;

    public OwnedNetnsTests() : base("crisp-onet")
    {
        _owner = Gcc.Workload("netnsowner");
        _tcp = Gcc.Workload("tcpstream");
    }

    private const string NftRules = """
        /usr/sbin/nft -f - <<'EOF'
        table inet crisptest {
          chain input {
            type filter hook input priority 0; policy accept;
            iifname "lo" ip protocol tcp ct state new,established counter accept
            counter drop
          }
        }
        EOF
        """;

    private const string IptRules = """
        IPT=iptables-legacy; command -v $IPT >/dev/null || IPT=iptables
        $IPT -A INPUT -i lo -p tcp -m state --state NEW,ESTABLISHED -j ACCEPT
        $IPT -A INPUT -j DROP
        """;

    private static string? IptablesTool() =>
        new[] { "/usr/sbin/iptables-legacy", "/sbin/iptables-legacy", "/usr/sbin/iptables", "/sbin/iptables" }.FirstOrDefault(File.Exists);

    /// <summary>Starts the tree: lo up with MTU 60000 and <see cref="Addr"/>, then <paramref name="rules"/>, then tcpstream pair on that address.</summary>
    private int StartPair(string rules, string log, long total)
    {
        string setup = TestDir["setup.sh"];
        File.WriteAllText(setup, $"PATH=/usr/sbin:/usr/bin:/sbin:/bin\nip link set lo mtu 60000 up\nip addr add {Addr}/32 dev lo\n{rules}\n");
        int pid = SpawnLogged(log, [Ip, "netns", "exec", Ns, _owner, setup, _tcp, "pair", Addr, "0", total.ToString(), log]);
        Children.Add(pid);
        return pid;
    }

    /// <summary>`crisp restore --tcp-established -d` of <paramref name="img"/> in the namespace; the restored root, it and its children adopted.</summary>
    private int RestoreDetached(string img, string[] extra)
    {
        string pidfile = TestDir["pid"];
        var r = Crisp(["restore", "-D", img, "--tcp-established", "-d", "--pidfile", pidfile, .. extra]);
        Assert.True(r.ExitCode == 0, r.ToString());
        int root = int.Parse(File.ReadAllText(pidfile).Trim());
        Restored.Add(root);
        foreach (var child in File.ReadAllText($"/proc/{root}/task/{root}/children").Split(' ', StringSplitOptions.RemoveEmptyEntries))
            Restored.Add(int.Parse(child));
        return root;
    }

    /// <summary>A command run in the network namespace of <paramref name="pid"/>.</summary>
    private static string InNetns(int pid, params string[] cmd) => Sh([Nsenter, $"--net=/proc/{pid}/ns/net", "--", .. cmd]);

    /// <summary>The tree's rules, counters left out (they count packets, and the restore's own).</summary>
    private static string Rules(int pid)
    {
        string nft = CounterRe().Replace(InNetns(pid, Nft, "list", "ruleset"), "counter");
        string? ipt = IptablesTool();
        string legacy = ipt == null ? "" : string.Join('\n', InNetns(pid, ipt + "-save").Split('\n')
            .Where(l => !l.StartsWith('#')).Select(l => ChainCounterRe().Replace(l, "")));
        return nft + "\n--- iptables ---\n" + legacy;
    }

    [GeneratedRegex(@"counter packets \d+ bytes \d+")]
    private static partial Regex CounterRe();

    [GeneratedRegex(@" \[\d+:\d+\]$")]
    private static partial Regex ChainCounterRe();

    private string HostRuleset() => Run(Ip, "netns", "exec", Ns, Nft, "list", "ruleset").Output;

    private static ulong NetnsInode(string procEntry) => LibC.Stat($"/proc/{procEntry}/ns/net").st_ino;

    /// <summary>The tcpstream pair's server (the netnsowner process after its exec), once both ends stream.</summary>
    private static int WaitStreaming(int pid, string log)
    {
        WaitForLine(log, l => l.StartsWith("client progress"));
        WaitForLine(log, l => l.StartsWith("server progress"));
        return pid;
    }

    private void DumpRestoreAndCheck(string rules, bool lazy, string networkLock = "nftables")
    {
        string log = TestDir["pair.log"], img = TestDir["img"];
        int pid = WaitStreaming(StartPair(rules, log, 4_000_000), log);
        Assert.NotEqual(NetnsInode("self"), NetnsInode(pid.ToString()));
        string before = Rules(pid);
        Assert.Contains(rules.Contains("nft") ? "crisptest" : "-A INPUT -j DROP", before);

        var d = Crisp("dump", "-t", pid.ToString(), "-D", img, "--tcp-established", "--network-lock", networkLock);
        Assert.True(d.ExitCode == 0, d.ToString());
        Reap(pid);
        Children.Remove(pid);
        foreach (var f in new[] { "netns-", "netdev-", "ifaddr-", "route-", "nftables-" })
            Assert.True(Directory.GetFiles(img, f + "*.img").Length == 1, $"no {f}*.img in {string.Join(", ", Directory.GetFiles(img).Select(Path.GetFileName))}");
        Assert.DoesNotContain("CRIU", File.ReadAllText(Directory.GetFiles(img, "nftables-*.img").Single()));
        // CRIU's decoder reads the device as the loopback the tree had (flags: IFF_UP among them).
        var dev = Crit.DecodeJson(Directory.GetFiles(img, "netdev-*.img").Single()).GetProperty("entries")[0];
        Assert.Equal("LOOPBACK", dev.GetProperty("type").GetString());
        Assert.Equal(60000, dev.GetProperty("mtu").GetInt32());
        Assert.Equal(1, Convert.ToInt32(dev.GetProperty("flags").GetString(), 16) & 1);
        Assert.Equal("NETNS", Crit.DecodeJson(Directory.GetFiles(img, "netns-*.img").Single()).GetProperty("magic").GetString());
        Assert.DoesNotContain("CRIU-", HostRuleset());

        LazyDaemon? daemon = lazy ? new LazyDaemon(img, TestDir.Path) : null;
        try
        {
            int root = RestoreDetached(img, lazy ? ["--lazy-pages"] : []);
            // A namespace of its own again, with what the tree had: the rules exactly (no lock left), lo's MTU and address.
            Assert.NotEqual(NetnsInode("self"), NetnsInode(root.ToString()));
            Assert.Equal(before, Rules(root));
            string lo = InNetns(root, Ip, "addr", "show", "dev", "lo");
            Assert.Contains("mtu 60000", lo);
            Assert.Contains($"inet {Addr}/32", lo);
            Assert.Contains("UP", lo.Split('\n')[0]);
            Assert.DoesNotContain("CRIU-", HostRuleset());
            Assert.Equal("pair exit server=0 client=0", WaitForLine(log, l => l.StartsWith("pair exit"), timeoutMs: 90_000));
        }
        finally { daemon?.Dispose(); }
    }

    [Theory]
    [InlineData(false, "nftables")]
    [InlineData(true, "nftables")]
    [InlineData(false, "iptables")]
    public void A_connection_inside_a_namespace_the_tree_owns_comes_back_with_its_nftables_rules(bool lazy, string networkLock) =>
        DumpRestoreAndCheck(NftRules, lazy, networkLock);

    [IptablesFact]
    public void A_connection_inside_a_namespace_the_tree_owns_comes_back_with_its_iptables_rules() =>
        DumpRestoreAndCheck(IptRules, lazy: false);

    /// <summary>A fact that needs iptables (legacy preferred, as zdtm's socket-tcp-ipt-nfconntrack): skipped, saying so, where there is none.</summary>
    public sealed class IptablesFactAttribute : FactAttribute
    {
        public IptablesFactAttribute()
        {
            if (IptablesTool() == null) Skip = "neither iptables-legacy nor iptables is installed (.ci/run installs the iptables package)";
        }
    }

    /// <summary>
    /// Sysctls set away from a new namespace's defaults, where the order of the writes at restore
    /// matters: all.forwarding=1 resets all.accept_redirects (so that one is written after it) and
    /// sets default's and lo's forwarding (so all goes first, and default's 0 after it); lo's own
    /// differ from default's; a string one (stable_secret, unset and unreadable in a new
    /// namespace); net.unix.max_dgram_qlen and ping_group_range.
    /// </summary>
    private static readonly (string Name, string Value)[] Sysctls =
    [
        ("net/ipv4/conf/all/forwarding", "1"), ("net/ipv4/conf/all/accept_redirects", "1"),
        ("net/ipv4/conf/default/forwarding", "0"), ("net/ipv4/conf/default/tag", "-7"),
        ("net/ipv4/conf/lo/tag", "42"), ("net/ipv4/conf/lo/arp_ignore", "2"),
        ("net/ipv6/conf/all/hop_limit", "99"), ("net/ipv6/conf/default/hop_limit", "77"),
        ("net/ipv6/conf/lo/hop_limit", "33"), ("net/ipv6/conf/lo/accept_source_route", "-1"),
        ("net/ipv6/conf/default/stable_secret", "2001:0db8:0000:0000:0000:0000:0000:0042"),
        ("net/unix/max_dgram_qlen", "123"), ("net/ipv4/ping_group_range", "0\t4242"),
    ];

    /// <summary>The values of <see cref="Sysctls"/> in the network namespace of <paramref name="pid"/>, as NAME=VALUE lines.</summary>
    private static string ReadSysctls(int pid) =>
        InNetns(pid, ["/bin/sh", "-c", "for f; do printf '%s=%s\\n' \"$f\" \"$(cat /proc/sys/$f)\"; done", "sh", .. Sysctls.Select(s => s.Name)]);

    [Fact]
    public void The_namespace_sysctls_of_all_default_and_lo_come_back_as_they_were()
    {
        string log = TestDir["pair.log"], img = TestDir["img"];
        string setup = string.Join('\n', Sysctls.Select(s => $"printf '%s\\n' '{s.Value}' > /proc/sys/{s.Name}"));
        int pid = WaitStreaming(StartPair(setup, log, 4_000_000), log);
        string before = ReadSysctls(pid);
        foreach (var (name, value) in Sysctls)
            Assert.Contains($"{name}={value}\n", before);

        var d = Crisp("dump", "-t", pid.ToString(), "-D", img, "--tcp-established");
        Assert.True(d.ExitCode == 0, d.ToString());
        Reap(pid);
        Children.Remove(pid);
        // CRIU's decoder reads them where CRIU keeps them: positional, forwarding the 13th of devconfs4.
        var netns = Crit.DecodeJson(Directory.GetFiles(img, "netns-*.img").Single()).GetProperty("entries")[0];
        Assert.Equal(30, netns.GetProperty("all_conf4").GetArrayLength());
        Assert.Equal(1, netns.GetProperty("all_conf4")[12].GetProperty("iarg").GetInt32());
        Assert.Equal(42, Crit.DecodeJson(Directory.GetFiles(img, "netdev-*.img").Single()).GetProperty("entries")[0]
            .GetProperty("conf4")[26].GetProperty("iarg").GetInt32());   // lo's tag

        int root = RestoreDetached(img, []);
        Assert.NotEqual(NetnsInode("self"), NetnsInode(root.ToString()));
        Assert.Equal(before, ReadSysctls(root));
        Assert.Equal("pair exit server=0 client=0", WaitForLine(log, l => l.StartsWith("pair exit"), timeoutMs: 90_000));
    }

    [Fact]
    public void A_tree_with_a_veth_in_its_namespace_is_refused_naming_it_and_goes_on()
    {
        string log = TestDir["pair.log"];
        int pid = WaitStreaming(StartPair("ip link add crispv0 type veth peer name crispv1", log, 2_000_000), log);
        var d = Crisp("dump", "-t", pid.ToString(), "-D", TestDir["img"], "--tcp-established");
        Assert.Equal(1, d.ExitCode);
        Assert.Matches("device crispv[01] \\(kind veth\\)", d.Stderr);
        Assert.DoesNotContain("CRIU-", HostRuleset());
        Assert.DoesNotContain("CRIU-", InNetns(pid, Nft, "list", "ruleset"));
        Assert.Equal("pair exit server=0 client=0", WaitForLine(log, l => l.StartsWith("pair exit"), timeoutMs: 90_000));
    }

    [Fact]
    public void A_failed_restore_after_the_namespace_was_made_leaves_no_process_and_no_rule()
    {
        string log = TestDir["pair.log"], img = TestDir["img"];
        int pid = WaitStreaming(StartPair(NftRules, log, 40_000_000), log);
        var tasks = new[] { pid }.Concat(File.ReadAllText($"/proc/{pid}/task/{pid}/children").Split(' ', StringSplitOptions.RemoveEmptyEntries).Select(int.Parse)).ToList();
        var d = Crisp("dump", "-t", pid.ToString(), "-D", img, "--tcp-established");
        Assert.True(d.ExitCode == 0, d.ToString());
        Reap(pid);
        Children.Remove(pid);
        foreach (var f in Directory.GetFiles(img, "pages-*.img")) File.WriteAllBytes(f, []);   // memory that cannot be restored
        var r = Crisp("restore", "-D", img, "--tcp-established", "-d");
        Assert.True(r.ExitCode == 3, r.ToString());
        // It failed once the namespace was there (making the memory), not while reading the images.
        Assert.True(Regex.IsMatch(r.Stderr, "restore failed at step 'process \\d+: "), r.ToString());
        Assert.DoesNotContain("CRIU-", HostRuleset());
        foreach (int t in tasks)
            Assert.True(Poll.Until(() => !Directory.Exists($"/proc/{t}"), 10_000), $"task {t} of the failed restore is still there");
    }
}
