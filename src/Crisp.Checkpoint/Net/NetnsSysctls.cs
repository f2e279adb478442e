using System.Globalization;
using System.Text;
using Crisp.Images.Proto;
using Crisp.Native;

namespace Crisp.Checkpoint.Net;

/*
 * The sysctls of a network namespace the tree owns, kept as CRIU keeps them (criu/net.c):
 * net.ipv4.conf.{all,default,DEV}.* and net.ipv6.conf.{all,default,DEV}.* for the names of CRIU's
 * devconfs4 and devconfs6, one SysctlEntry per name in the lists' order (the entries are
 * positional: CRIU's restore reads them by index, so the lists below must stay CRIU's), then
 * net.unix.max_dgram_qlen (netns_entry.unix_conf) and net.ipv4.ping_group_range (ipv4_sysctl).
 * Names the kernel has but CRIU's lists lack are not kept; so is mc_forwarding, which is read-only.
 *
 * They are read and written from a thread that joined the namespace (NamespaceThread): the
 * /proc/sys/net a task sees is that of its own network namespace, so the thread sees the tree's.
 *
 * Dump: a name this kernel lacks is kept without a value, so restore leaves it alone;
 * stable_secret reads EIO until it is set (on "all" always), and is kept the same way; a
 * ping_group_range at its default "1 0" is kept without a value; a net/unix this kernel lacks
 * leaves unix_conf out. Strings are kept as the kernel printed them (newline included), as CRIU does.
 *
 * Restore, in CRIU's order: all before default (writing all.forwarding also sets default's and
 * every device's), IPv4 before IPv6, then unix and ping_group_range; each device's once the
 * device is there, after the namespace's. Within each directory accept_redirects goes last, as
 * writing forwarding resets it. Every value kept is written, and a write that fails fails the
 * restore; but a device other than lo skips the values equal to default's, as CRIU does (it
 * took them from default when made; lo was made with the namespace, before default was written).
 */
internal static class NetnsSysctls
{
    /// <summary>CRIU 4.2's devconfs4 (criu/net.c): net.ipv4.conf.DEV.NAME, in the images' order.</summary>
    public static readonly string[] DevConfs4 =
    [
        "accept_local", "accept_redirects", "accept_source_route", "arp_accept", "arp_announce", "arp_filter",
        "arp_ignore", "arp_notify", "bootp_relay", "disable_policy", "disable_xfrm", "force_igmp_version",
        "forwarding", "igmpv2_unsolicited_report_interval", "igmpv3_unsolicited_report_interval", "log_martians",
        "medium_id", "promote_secondaries", "proxy_arp", "proxy_arp_pvlan", "route_localnet", "rp_filter",
        "secure_redirects", "send_redirects", "shared_media", "src_valid_mark", "tag", "ignore_routes_with_linkdown",
        "drop_gratuitous_arp", "drop_unicast_in_l2_multicast",
    ];

    /// <summary>CRIU 4.2's devconfs6: net.ipv6.conf.DEV.NAME, in the images' order; stable_secret is the one string.</summary>
    public static readonly string[] DevConfs6 =
    [
        "accept_dad", "accept_ra", "accept_ra_defrtr", "accept_ra_from_local", "accept_ra_min_hop_limit",
        "accept_ra_mtu", "accept_ra_pinfo", "accept_ra_rt_info_max_plen", "accept_ra_rtr_pref", "accept_redirects",
        "accept_source_route", "autoconf", "dad_transmits", "disable_ipv6", "drop_unicast_in_l2_multicast",
        "drop_unsolicited_na", "force_mld_version", "force_tllao", "forwarding", "hop_limit",
        "ignore_routes_with_linkdown", "keep_addr_on_down", "max_addresses", "max_desync_factor",
        "mldv1_unsolicited_report_interval", "mldv2_unsolicited_report_interval", "mtu", "ndisc_notify",
        "optimistic_dad", "proxy_ndp", "regen_max_retry", "router_probe_interval", "router_solicitation_delay",
        "router_solicitation_interval", "router_solicitations", "stable_secret", "suppress_frag_ndisc",
        "temp_prefered_lft", "temp_valid_lft", "use_oif_addrs_only", "use_optimistic", "use_tempaddr",
    ];

    private const string StableSecret = "stable_secret", AcceptRedirects = "accept_redirects", Mtu = "mtu";
    private const string UnixQlen = "net/unix/max_dgram_qlen", PingGroupRange = "net/ipv4/ping_group_range";
    private const int MaxValue = 256;   // CRIU reads at most 200 characters of a string sysctl
    private const uint DevconfsUnused = uint.MaxValue;   // an int of the old conf lists: "not there at dump"

    /// <summary>Fills <paramref name="netns"/>'s sysctls and each device's conf4/conf6 from the namespace of <paramref name="netnsFd"/>.</summary>
    public static void Dump(int netnsFd, NetnsEntry netns, IEnumerable<NetDeviceEntry> devices) => InNetns(netnsFd, () =>
    {
        netns.DefConf4.Add(ReadConf("ipv4", "default", DevConfs4));
        netns.AllConf4.Add(ReadConf("ipv4", "all", DevConfs4));
        netns.DefConf6.Add(ReadConf("ipv6", "default", DevConfs6));
        netns.AllConf6.Add(ReadConf("ipv6", "all", DevConfs6));
        if (ReadText(UnixQlen) is { } qlen) netns.UnixConf.Add(Int(UnixQlen, qlen));
        if (ReadText(PingGroupRange) is { } range)
        {
            var parts = range.Split((char[])[' ', '\t', '\n'], StringSplitOptions.RemoveEmptyEntries);
            if (parts.Length != 2) throw new CrispException($"/proc/sys/{PingGroupRange} reads '{range.Trim()}': not two group ids");
            var e = new SysctlEntry { Type = SysctlType.CtlStr };
            if (parts is not ["1", "0"]) e.Sarg = range;   // "1 0" (no group may ping) is the default
            netns.Ipv4Sysctl.Add(e);
        }
        foreach (var d in devices)
        {
            d.Conf4.Add(ReadConf("ipv4", d.Name, DevConfs4));
            d.Conf6.Add(ReadConf("ipv6", d.Name, DevConfs6));
        }
    });

    /// <summary>Writes the namespace's own sysctls (all, default, unix, ping_group_range) in the namespace of <paramref name="netnsFd"/>.</summary>
    public static void RestoreNamespace(int netnsFd, NetnsEntry netns) => InNetns(netnsFd, () =>
    {
        WriteConf("ipv4", "all", DevConfs4, Conf4(netns.AllConf4, netns.AllConf), null);
        WriteConf("ipv4", "default", DevConfs4, Conf4(netns.DefConf4, netns.DefConf), null);
        WriteConf("ipv6", "all", DevConfs6, netns.AllConf6, null);
        WriteConf("ipv6", "default", DevConfs6, netns.DefConf6, null);
        foreach (var e in netns.UnixConf.Take(1).Where(e => e.HasIarg)) Write(UnixQlen, e);
        foreach (var e in netns.Ipv4Sysctl.Take(1).Where(e => e.HasSarg)) Write(PingGroupRange, e);
    });

    /// <summary>Writes a device's own sysctls, once it is there and the namespace's are written.</summary>
    public static void RestoreDevice(int netnsFd, NetDeviceEntry d, NetnsEntry netns) => InNetns(netnsFd, () =>
    {
        bool lo = d.Type == NdType.Loopback;
        WriteConf("ipv4", d.Name, DevConfs4, Conf4(d.Conf4, d.Conf), lo ? null : Conf4(netns.DefConf4, netns.DefConf));
        WriteConf("ipv6", d.Name, DevConfs6, d.Conf6, lo ? null : netns.DefConf6);
    });

    /// <summary>The sysctl names with a value in <paramref name="conf"/>, for the log.</summary>
    public static int Count(IEnumerable<SysctlEntry> conf) => conf.Count(e => e.HasIarg || e.HasSarg);

    private static List<SysctlEntry> ReadConf(string proto, string dev, string[] names)
    {
        var conf = new List<SysctlEntry>(names.Length);
        foreach (var name in names)
        {
            string path = ConfPath(proto, dev, name);
            if (name == StableSecret)
            {
                var s = new SysctlEntry { Type = SysctlType.CtlStr };
                if (ReadText(path, eioUnset: true) is { } secret) s.Sarg = secret;
                conf.Add(s);
            }
            else conf.Add(ReadText(path) is { } text ? Int(path, text) : new SysctlEntry { Type = SysctlType.Ctl32 });
        }
        return conf;
    }

    private static void WriteConf(string proto, string dev, string[] names, IList<SysctlEntry> conf, IList<SysctlEntry>? defaults)
    {
        int last = -1;
        for (int i = 0; i < Math.Min(names.Length, conf.Count); i++)
        {
            if (defaults != null && i < defaults.Count && Same(conf[i], defaults[i]) && names[i] != Mtu) continue;
            if (names[i] == AcceptRedirects)
            {
                last = i;
                continue;
            }
            Write(ConfPath(proto, dev, names[i]), conf[i]);
        }
        if (last >= 0) Write(ConfPath(proto, dev, names[last]), conf[last]);
    }

    /// <summary>The old images' IPv4 conf (ints, CRIU before 3.x) as entries, when there are no new ones.</summary>
    private static IList<SysctlEntry> Conf4(IList<SysctlEntry> conf4, IList<int> old) =>
        conf4.Count > 0 || old.Count == 0 ? conf4
            : old.Select(v => (uint)v == DevconfsUnused ? new SysctlEntry { Type = SysctlType.Ctl32 } : new SysctlEntry { Type = SysctlType.Ctl32, Iarg = v }).ToList();

    private static bool Same(SysctlEntry a, SysctlEntry b) => a.Type == b.Type && (a.Type == SysctlType.Ctl32
        ? a.HasIarg && b.HasIarg && a.Iarg == b.Iarg
        : a.HasSarg && b.HasSarg && a.Sarg == b.Sarg);

    private static string ConfPath(string proto, string dev, string name) => $"net/{proto}/conf/{dev}/{name}";

    private static SysctlEntry Int(string path, string text) =>
        int.TryParse(text.Trim(), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out int v)
            ? new SysctlEntry { Type = SysctlType.Ctl32, Iarg = v }
            : throw new CrispException($"/proc/sys/{path} reads '{text.Trim()}': not an integer");

    private static void InNetns(int netnsFd, Action work) =>
        NamespaceThread.Run($"/proc/self/fd/{netnsFd}", NetTool.CLONE_NEWNET, () =>
        {
            work();
            return 0;
        });

    /// <summary>What /proc/sys/<paramref name="path"/> reads; null when the kernel has no such sysctl (or, with <paramref name="eioUnset"/>, reads EIO: not set).</summary>
    private static unsafe string? ReadText(string path, bool eioUnset = false)
    {
        string full = "/proc/sys/" + path;
        int fd = LibC.open(full, LibC.O_RDONLY | LibC.O_CLOEXEC, 0);
        if (fd < 0 && Errno.Last == Errno.ENOENT) return null;
        Errno.Check(fd, "open", full);
        try
        {
            var buf = new byte[MaxValue];
            nint n;
            fixed (byte* p = buf) n = LibC.read(fd, p, (nuint)buf.Length);
            if (n < 0 && eioUnset && Errno.Last == Errno.EIO) return null;
            Errno.Check(n, "read", full);
            return Encoding.UTF8.GetString(buf, 0, (int)n);
        }
        finally { LibC.close(fd); }
    }

    private static unsafe void Write(string path, SysctlEntry e)
    {
        if (e.Type == SysctlType.Ctl32 ? !e.HasIarg : !e.HasSarg) return;   // not there at dump
        string text = e.Type == SysctlType.Ctl32 ? e.Iarg.ToString(CultureInfo.InvariantCulture) : e.Sarg.TrimEnd('\n');
        string full = "/proc/sys/" + path;
        try
        {
            int fd = Errno.Check(LibC.open(full, LibC.O_WRONLY | LibC.O_CLOEXEC, 0), "open", full);
            try
            {
                var bytes = Encoding.UTF8.GetBytes(text + "\n");
                fixed (byte* p = bytes) Errno.Check(LibC.write(fd, p, (nuint)bytes.Length), "write", full);
            }
            finally { LibC.close(fd); }
        }
        catch (SyscallException x)
        {
            throw new CrispException($"restoring the sysctl {path.Replace('/', '.')} = {text} in the new network namespace: {x.Message}", x);
        }
    }
}
