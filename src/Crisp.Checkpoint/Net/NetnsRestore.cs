using Crisp.Images;
using Crisp.Images.Proto;
using Crisp.Native;

namespace Crisp.Checkpoint.Net;

/// <summary>
/// Fills a new network namespace from a dump's images (NetnsDump wrote them), in CRIU's order:
/// the namespace's sysctls (all, default, …), the devices (lo's MTU and up/down, then its own
/// sysctls: NetnsSysctls.cs), addresses (`ip addr restore`; lo's default ones are there
/// already and `ip` passes over them), routes, then the iptables rules (iptables-restore of what
/// iptables-save printed) and the nftables ruleset (`nft -f`). Nothing of the network lock is in
/// these images: the dump read them before it locked.
/// </summary>
internal static class NetnsRestore
{
    private const uint IFF_UP = 1;

    public static void Fill(int netnsFd, NetnsImages images, string imagesPath)
    {
        NetnsSysctls.RestoreNamespace(netnsFd, images.Netns);
        foreach (var d in images.Devices)
        {
            if (d.Type != NdType.Loopback)
                throw new ImageException(imagesPath, $"network device {d.Name} of type {d.Type}: crisp restores the loopback device only");
            NetTool.Check(netnsFd, "ip", ["link", "set", "dev", d.Name, "mtu", d.Mtu.ToString(), (d.Flags & IFF_UP) != 0 ? "up" : "down"],
                $"restoring network device {d.Name}");
            NetnsSysctls.RestoreDevice(netnsFd, d, images.Netns);
        }
        // The raw images start with iproute2's 4-byte magic: only that means nothing was saved.
        if (Has(images, "ifaddr")) NetTool.Check(netnsFd, "ip", ["addr", "restore"], "restoring the addresses", images.Raw["ifaddr"]);
        if (Has(images, "route")) NetTool.Check(netnsFd, "ip", ["route", "restore"], "restoring the routes", images.Raw["route"]);
        if (Has(images, "route6")) NetTool.Check(netnsFd, "ip", ["route", "restore"], "restoring the IPv6 routes", images.Raw["route6"]);
        foreach (var (kind, family) in new[] { ("iptables", "iptables"), ("ip6tables", "ip6tables") })
        {
            if (!images.Raw.TryGetValue(kind, out var rules) || rules.Length == 0) continue;
            string tool = NetnsDump.LegacyTool(family, "restore")
                ?? throw new CrispException($"the images hold {kind} rules (legacy tables) but {family}-legacy-restore is not installed");
            NetTool.Check(netnsFd, tool, ["-w"], $"restoring the {kind} rules", rules);
        }
        if (images.Raw.TryGetValue("nftables", out var ruleset) && ruleset.Length > 0)
            NetTool.Check(netnsFd, "nft", ["-f", "-"], "restoring the nftables ruleset", ruleset);
    }

    private static bool Has(NetnsImages images, string kind) => images.Raw.TryGetValue(kind, out var b) && b.Length > 4;
}
