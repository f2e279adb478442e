using System.Buffers.Binary;
using System.Net;
using Crisp.Native;

namespace Crisp.Checkpoint.Sockets;

/// <summary>
/// The network lock: from the moment a connection is frozen until its restored socket is live,
/// no packet of it may reach a socket that would answer with RST (a closed port, or the old
/// socket turned back on), and no packet may leave the old one. As CRIU does for a tree that does not
/// own its network namespace, each connection is locked on its own, both directions:
///
///  - nftables (the default): one table <c>inet CRIU-RUNID</c> with input and output chains that drop
///    what matches the sets conns4/conns6 (saddr . sport . daddr . dport) and accept packets
///    marked 0xC114 (SOCCR_MARK, the packets restore itself must send). Unlocking deletes the table.
///    The name is CRIU's, with the run id kept in inventory.img (dump_criu_run_id), so a dump of
///    either tool is unlocked by the restore of either.
///  - iptables: one DROP rule per direction in INPUT and OUTPUT of the filter table, matching
///    the same four values and not the mark; unlocking deletes those exact rules.
///  - skip: nothing (the caller has another way, or accepts the risk).
///
/// A dump that kills its tree leaves the lock in place for the restore to remove (CRIU's rule:
/// the peer's retransmissions must not be answered by a RST before the socket is back). Every
/// other end of a dump and every end of a restore removes it.
/// </summary>
public sealed partial class NetworkLock
{
    public const int SOCCR_MARK = 0xC114;

    private readonly NetworkLockMethod _method;
    private readonly string _table;
    private readonly List<TcpConnection> _locked = [];
    private bool _tableMade;

    private NetworkLock(NetworkLockMethod method, string runId)
    {
        _method = method;
        RunId = runId;
        _table = $"inet CRIU-{runId}";
    }

    public string RunId { get; }
    public NetworkLockMethod Method => _method;
    public bool Holds => _tableMade || _locked.Count > 0;

    /// <summary>A lock for one dump (nothing is locked until <see cref="Add"/>).</summary>
    public static NetworkLock ForDump(NetworkLockMethod method) =>
        new(method, $"{Environment.ProcessId}-{DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() % 100000000}");

    /// <summary>A new lock under a given run id (a restore where the dump's lock is not).</summary>
    public static NetworkLock ForRun(NetworkLockMethod method, string runId) => new(method, runId);

    /// <summary>The lock a dump left (its run id from inventory.img), to add to or release.</summary>
    public static NetworkLock Existing(NetworkLockMethod method, string runId, IEnumerable<TcpConnection> connections)
    {
        var l = new NetworkLock(method, runId);
        l._tableMade = method == NetworkLockMethod.Nftables;
        if (method == NetworkLockMethod.Iptables) l._locked.AddRange(connections);
        return l;
    }

    /// <summary>Drops the connection's packets both ways from now on.</summary>
    public void Add(TcpConnection c)
    {
        if (_netnsFd >= 0)
        {
            if (_method != NetworkLockMethod.Skip && !_tableMade) LockNamespace();
            _locked.Add(c);
            return;
        }
        switch (_method)
        {
            case NetworkLockMethod.Skip: return;
            case NetworkLockMethod.Nftables:
                if (!_tableMade) MakeTable();
                var (fam, src, dst) = Plain(c);
                char v = fam == LibC.AF_INET ? '4' : '6';
                Nft($"add element {_table} conns{v} {{ {Format(fam, dst)} . {c.DstPort} . {Format(fam, src)} . {c.SrcPort} }}\n" +
                    $"add element {_table} conns{v} {{ {Format(fam, src)} . {c.SrcPort} . {Format(fam, dst)} . {c.DstPort} }}\n",
                    $"locking {c}");
                _locked.Add(c);
                return;
            case NetworkLockMethod.Iptables:
                Iptables(c, insert: true);
                _locked.Add(c);
                return;
        }
    }

    /// <summary>Takes every rule away; safe to call again. Errors are logged, not thrown (it runs on failure paths).</summary>
    public bool Release()
    {
        bool ok = true;
        try
        {
            if (_netnsFd >= 0)
            {
                if (_tableMade) UnlockNamespace();
                else ForgetNamespace();
            }
            else if (_method == NetworkLockMethod.Nftables && _tableMade)
            {
                _tableMade = false;
                Nft($"delete table {_table}\n", "unlocking the network");
            }
            else if (_method == NetworkLockMethod.Iptables)
                foreach (var c in _locked.ToList())
                {
                    Iptables(c, insert: false);
                    _locked.Remove(c);
                }
        }
        catch (CrispException e)
        {
            Log.E($"network unlock ({_method}): {e.Message}");
            ok = false;
        }
        _locked.Clear();
        return ok;
    }

    /// <summary>Whether the table exists now (the tests check the ruleset after every run).</summary>
    public static bool TableExists(string runId)
    {
        var (status, output) = RunHere(Tool("nft"), ["list", "tables"], null);
        return status == 0 && output.Contains($"CRIU-{runId}", StringComparison.Ordinal);
    }

    private void MakeTable()
    {
        string t = _table;
        string mark = $"0x{SOCCR_MARK:x}";
        Nft($$"""
            add table {{t}}
            add chain {{t}} output { type filter hook output priority 0; }
            add rule {{t}} output meta mark {{mark}} accept
            add chain {{t}} input { type filter hook input priority 0; }
            add rule {{t}} input meta mark {{mark}} accept
            add set {{t}} conns4 { type ipv4_addr . inet_service . ipv4_addr . inet_service; }
            add rule {{t}} output ip saddr . tcp sport . ip daddr . tcp dport @conns4 drop
            add rule {{t}} input ip saddr . tcp sport . ip daddr . tcp dport @conns4 drop
            add set {{t}} conns6 { type ipv6_addr . inet_service . ipv6_addr . inet_service; }
            add rule {{t}} output ip6 saddr . tcp sport . ip6 daddr . tcp dport @conns6 drop
            add rule {{t}} input ip6 saddr . tcp sport . ip6 daddr . tcp dport @conns6 drop

            """, "locking the network (nftables)");
        _tableMade = true;
    }

    private void Iptables(TcpConnection c, bool insert)
    {
        foreach (var (tool, args) in IptablesRules(c, insert ? "-I" : "-D"))
        {
            var (status, output) = Run(tool, args, null);
            if (status != 0)
                throw new CrispException($"{(insert ? "locking" : "unlocking")} {c} with {Path.GetFileName(tool)} failed (status {status}): {output.Trim()}");
        }
    }

    /// <summary>
    /// Whether both iptables rules of <paramref name="c"/> are in this network namespace (`-C`): a
    /// restore where the dump ran finds the dump's; one in another namespace (a migration) must make its own.
    /// </summary>
    public static bool IptablesLocked(TcpConnection c) =>
        IptablesRules(c, "-C").All(r => RunHere(r.Tool, r.Args, null).Status == 0);

    private static IEnumerable<(string Tool, string[] Args)> IptablesRules(TcpConnection c, string op)
    {
        var (fam, src, dst) = Plain(c);
        string tool = Tool(fam == LibC.AF_INET ? "iptables" : "ip6tables");
        foreach (var (chain, s, sp, d, dp) in new[] { ("INPUT", dst, c.DstPort, src, c.SrcPort), ("OUTPUT", src, c.SrcPort, dst, c.DstPort) })
            yield return (tool, ["-w", "-t", "filter", op, chain, "--protocol", "tcp", "-m", "mark", "!", "--mark", $"0x{SOCCR_MARK:x}",
                "--source", Format(fam, s), "--sport", sp.ToString(), "--destination", Format(fam, d), "--dport", dp.ToString(), "-j", "DROP"]);
    }

    private void Nft(string script, string what)
    {
        var (status, output) = Run(Tool("nft"), ["-f", "-"], script);
        if (status != 0) throw new CrispException($"{what}: nft failed (status {status}): {output.Trim()}");
    }

    /// <summary>A v4-mapped IPv6 connection is locked as the IPv4 one it carries (CRIU's rule).</summary>
    private static (int Family, uint[] Src, uint[] Dst) Plain(TcpConnection c)
    {
        if (c.Family == LibC.AF_INET6 && IsMapped(c.DstAddr) && IsMapped(c.SrcAddr))
            return (LibC.AF_INET, [c.SrcAddr[3]], [c.DstAddr[3]]);
        return (c.Family, c.SrcAddr, c.DstAddr);
    }

    private static bool IsMapped(uint[] a) => a.Length == 4 && a[0] == 0 && a[1] == 0 && a[2] == 0xffff0000u;

    public static string Format(int family, uint[] words)
    {
        var bytes = new byte[family == LibC.AF_INET ? 4 : 16];
        for (int i = 0; i < bytes.Length / 4 && i < words.Length; i++)
            BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan(4 * i), words[i]);
        return new IPAddress(bytes).ToString();
    }

    private static string Tool(string name) =>
        Net.NetTool.Find(name) ?? throw new CrispException($"the network lock needs {name}, which is not installed (or choose another --network-lock)");

    /// <summary>Runs a tool (in the lock's namespace) with <paramref name="stdin"/> fed in; returns its exit status and what it printed.</summary>
    private (int Status, string Output) Run(string path, string[] args, string? stdin)
    {
        var r = Net.NetTool.Run(_netnsFd, path, args, stdin is null ? null : System.Text.Encoding.UTF8.GetBytes(stdin));
        return (r.Status, r.Output);
    }

    private static (int Status, string Output) RunHere(string path, string[] args, string? stdin)
    {
        var r = Net.NetTool.RunHere(path, args, stdin is null ? null : System.Text.Encoding.UTF8.GetBytes(stdin));
        return (r.Status, r.Output);
    }
}
