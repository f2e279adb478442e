using Crisp.Native;

namespace Crisp.Checkpoint.Sockets;

/// <summary>
/// The lock of a network namespace the tree owns (CRIU's network_lock_internal): the whole
/// namespace, not each connection. Everything in and out is dropped but packets marked
/// SOCCR_MARK (what restore itself sends):
///
///  - nftables: table <c>inet CRIU-RUNID</c> with input and output chains of policy drop that
///    accept the mark; unlocking deletes the table;
///  - iptables: a chain CRIU (mark → ACCEPT, then DROP) jumped to first from INPUT and OUTPUT, for
///    IPv4 and IPv6 (iptables-restore --noflush, as CRIU loads it); unlocking removes the jumps, then the chain.
///
/// Every tool runs inside that namespace (the lock holds its own descriptor of it, closed on
/// release), so nothing is ever added to crisp's own ruleset. The rules of the namespace itself
/// are read before the lock and restored before it (NetnsDump, RestoreNetns), so neither dump nor
/// restore ever sees the lock as the tree's.
/// </summary>
public sealed partial class NetworkLock
{
    private int _netnsFd = -1;

    /// <summary>A lock of the whole namespace of <paramref name="netnsFd"/> (duplicated: the caller keeps its own).</summary>
    public static NetworkLock ForNamespace(NetworkLockMethod method, string runId, int netnsFd)
    {
        var l = new NetworkLock(method, runId);
        l.UseNamespace(netnsFd);
        return l;
    }

    /// <summary>From now on this lock is the whole namespace of <paramref name="netnsFd"/>'s (a dump learns it owns one once the tree is frozen).</summary>
    public void UseNamespace(int netnsFd)
    {
        if (Holds) throw new InvalidOperationException("the network lock already holds connections");
        _netnsFd = Errno.Check(LibC.fcntl(netnsFd, LibC.F_DUPFD_CLOEXEC, 3), "fcntl(F_DUPFD_CLOEXEC)", "the network namespace's fd");
    }

    /// <summary>Whether this is the lock of a whole network namespace.</summary>
    public bool WholeNamespace => _netnsFd >= 0;

    /// <summary>
    /// The tree was killed: its namespace goes with it, lock and all, once nothing holds it; this
    /// lets go of the lock's own hold. (A namespace lock never outlives the namespace.)
    /// </summary>
    public void ForgetNamespace()
    {
        if (_netnsFd < 0) return;
        LibC.close(_netnsFd);
        _netnsFd = -1;
        _tableMade = false;
        _locked.Clear();
    }

    private void LockNamespace()
    {
        if (_method == NetworkLockMethod.Nftables)
        {
            string mark = $"0x{SOCCR_MARK:x}";
            Nft($$"""
                add table {{_table}}
                add chain {{_table}} output { type filter hook output priority 0; policy drop; }
                add rule {{_table}} output meta mark {{mark}} accept
                add chain {{_table}} input { type filter hook input priority 0; policy drop; }
                add rule {{_table}} input meta mark {{mark}} accept

                """, "locking the network namespace (nftables)");
        }
        else
        {
            _tablesBefore = NftTables();
            string conf = $"*filter\n:CRIU - [0:0]\n-I INPUT -j CRIU\n-I OUTPUT -j CRIU\n-A CRIU -m mark --mark 0x{SOCCR_MARK:x} -j ACCEPT\n-A CRIU -j DROP\nCOMMIT\n";
            foreach (var tool in new[] { "iptables-restore", "ip6tables-restore" })
                IptablesRestore(tool, conf, "locking the network namespace");
        }
        _tableMade = true;
    }

    private void UnlockNamespace()
    {
        _tableMade = false;
        try
        {
            if (_method == NetworkLockMethod.Nftables)
                Nft($"delete table {_table}\n", "unlocking the network namespace");
            else
            {
                foreach (var tool in new[] { "iptables-restore", "ip6tables-restore" })
                {
                    IptablesRestore(tool, "*filter\n:CRIU - [0:0]\n-D INPUT -j CRIU\n-D OUTPUT -j CRIU\nCOMMIT\n", "unlocking the network namespace");
                    IptablesRestore(tool, "*filter\n:CRIU - [0:0]\n-X CRIU\nCOMMIT\n", "unlocking the network namespace");
                }
                // nft-backed iptables made its filter tables for the lock: the ones the namespace did not have go again.
                foreach (var t in NftTables().Except(_tablesBefore ?? []).Where(t => t is "ip filter" or "ip6 filter"))
                    Nft($"delete table {t}\n", "unlocking the network namespace");
            }
        }
        finally
        {
            ForgetNamespace();
        }
    }

    private HashSet<string>? _tablesBefore;

    /// <summary>The namespace's nftables tables ("FAMILY NAME"), where nft is installed.</summary>
    private HashSet<string> NftTables()
    {
        if (Net.NetTool.Find("nft") is not { } nft) return [];
        var (status, output) = Run(nft, ["list", "tables"], null);
        return status != 0 ? [] : output.Split('\n').Where(l => l.StartsWith("table ", StringComparison.Ordinal)).Select(l => l[6..].Trim()).ToHashSet();
    }

    private void IptablesRestore(string tool, string conf, string what)
    {
        var (status, output) = Run(Tool(tool), ["-w", "--noflush"], conf);
        if (status != 0) throw new CrispException($"{what}: {tool} failed (status {status}): {output.Trim()}");
    }
}
