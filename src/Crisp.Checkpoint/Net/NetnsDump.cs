using System.Globalization;
using System.Text.Json;
using Crisp.Images;
using Crisp.Images.Proto;
using Crisp.Native;

namespace Crisp.Checkpoint.Net;

/*
 * A network namespace the tree owns (its root's differs from crisp's), dumped as CRIU dumps one
 * (criu/net.c): the devices (netdev-ID.img), the sysctls of the namespace and of each device
 * (netns-ID.img, netdev-ID.img; NetnsSysctls.cs), the addresses and routes as `ip addr save` /
 * `ip route save` print them, the iptables rules as iptables-save prints them (the legacy
 * tables: nft-backed ones are in the nftables ruleset already, as CRIU avoids dumping them
 * twice), and `nft list ruleset`. Every tool runs inside the namespace (NetTool).
 *
 * What is refused, before anything is written:
 *  - a device other than lo (veth, bridge, tun, macvlan, …): crisp makes only the loopback again;
 *  - a namespace some process outside the tree is also in (restore would split them);
 *  - (TreeNamespaces) a process of the tree in another network namespace than its root's.
 *
 * The rules are read before the network lock is taken (the lock's table must not be dumped as
 * the tree's), so the dump is made right after the freeze, before any socket is collected.
 */
internal static class NetnsDump
{
    private const uint IFF_UP = 0x1, IFF_BROADCAST = 0x2, IFF_LOOPBACK = 0x8, IFF_POINTOPOINT = 0x10, IFF_RUNNING = 0x40,
        IFF_NOARP = 0x80, IFF_PROMISC = 0x100, IFF_ALLMULTI = 0x200, IFF_MULTICAST = 0x1000, IFF_LOWER_UP = 0x10000;

    /// <summary>Refuses a namespace shared with processes outside the tree; returns its inode.</summary>
    public static ulong CheckNotShared(int root, IReadOnlySet<int> treePids)
    {
        ulong ino = LibC.Stat($"/proc/{root}/ns/net").st_ino;
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), NumberStyles.None, CultureInfo.InvariantCulture, out int pid) || treePids.Contains(pid)) continue;
            ulong theirs;
            try { theirs = LibC.Stat($"/proc/{pid}/ns/net").st_ino; }
            catch (SyscallException) { continue; }   // gone, or a kernel thread
            if (theirs == ino)
                throw new CrispException($"the tree of {root} has its own network namespace net:[{ino}], but process {pid} ({Comm(pid)}) " +
                                         "outside the tree is in it too: a network namespace shared with other processes is not supported");
        }
        return ino;
    }

    /// <summary>Reads the namespace of <paramref name="netnsFd"/>; throws on a device crisp cannot make again.</summary>
    public static NetnsImages Dump(int root, int netnsFd)
    {
        var images = new NetnsImages();
        string what = $"the network namespace of {root}";
        var links = JsonDocument.Parse(NetTool.Check(netnsFd, "ip", ["-j", "-d", "link", "show"], $"{what}: listing its devices"));
        foreach (var link in links.RootElement.EnumerateArray())
        {
            string name = link.GetProperty("ifname").GetString() ?? "?";
            string kind = link.TryGetProperty("linkinfo", out var li) && li.TryGetProperty("info_kind", out var k) ? k.GetString() ?? "?"
                : link.TryGetProperty("link_type", out var lt) ? lt.GetString() ?? "?" : "?";
            if (kind != "loopback" || name != "lo")
                throw new CrispException($"{what}: device {name} (kind {kind}) is not supported: crisp restores a network namespace " +
                                         "with its loopback device only");
            uint flags = 0;
            foreach (var f in link.GetProperty("flags").EnumerateArray())
                flags |= f.GetString() switch
                {
                    "UP" => IFF_UP, "BROADCAST" => IFF_BROADCAST, "LOOPBACK" => IFF_LOOPBACK, "POINTOPOINT" => IFF_POINTOPOINT,
                    "NOARP" => IFF_NOARP, "PROMISC" => IFF_PROMISC, "ALLMULTI" => IFF_ALLMULTI, "MULTICAST" => IFF_MULTICAST,
                    "LOWER_UP" => IFF_LOWER_UP | IFF_RUNNING, _ => 0,
                };
            images.Devices.Add(new NetDeviceEntry
            {
                Type = NdType.Loopback, Ifindex = link.GetProperty("ifindex").GetUInt32(), Mtu = link.GetProperty("mtu").GetUInt32(),
                Flags = flags, Name = name, Address = Google.Protobuf.ByteString.CopyFrom(new byte[6]),
            });
        }
        NetnsSysctls.Dump(netnsFd, images.Netns, images.Devices);
        images.Raw["ifaddr"] = NetTool.Check(netnsFd, "ip", ["addr", "save"], $"{what}: saving its addresses");
        images.Raw["route"] = NetTool.Check(netnsFd, "ip", ["route", "save"], $"{what}: saving its routes");
        images.Raw["route6"] = NetTool.Check(netnsFd, "ip", ["-6", "route", "save"], $"{what}: saving its IPv6 routes");
        if (LegacyTool("iptables", "save") is { } ipt) images.Raw["iptables"] = NetTool.Check(netnsFd, ipt, [], $"{what}: saving its iptables rules");
        if (LegacyTool("ip6tables", "save") is { } ip6t) images.Raw["ip6tables"] = NetTool.Check(netnsFd, ip6t, [], $"{what}: saving its ip6tables rules");
        if (NetTool.Find("nft") != null) images.Raw["nftables"] = NetTool.Check(netnsFd, "nft", ["list", "ruleset"], $"{what}: saving its nftables ruleset");
        var up = images.Devices.Where(d => (d.Flags & IFF_UP) != 0).Select(d => d.Name);
        Log.I($"{what}: devices {string.Join(", ", images.Devices.Select(d => $"{d.Name} mtu {d.Mtu}{((d.Flags & IFF_UP) != 0 ? " up" : " down")}"))}; " +
              $"{NetnsSysctls.Count(images.Netns.AllConf4.Concat(images.Netns.DefConf4).Concat(images.Netns.AllConf6).Concat(images.Netns.DefConf6))} all/default sysctls; " +
              $"rules: {string.Join(", ", images.Raw.Where(r => r.Key.Contains("tables", StringComparison.Ordinal)).Select(r => $"{r.Key} {r.Value.Length} bytes"))}");
        return images;
    }

    /// <summary>
    /// The legacy iptables tool (iptables-legacy-save / -restore), or null when there is none: the
    /// nft-backed tools' rules live in the nftables ruleset, dumped and restored with it.
    /// </summary>
    public static string? LegacyTool(string family, string verb) =>
        NetTool.Find($"{family}-legacy-{verb}") is { } p ? Path.GetFileName(p) : null;

    private static string Comm(int pid)
    {
        try { return File.ReadAllText($"/proc/{pid}/comm").Trim(); }
        catch (IOException) { return "?"; }
    }
}
