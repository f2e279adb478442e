using Crisp.Images.Proto;

namespace Crisp.Images;

/// <summary>
/// A network namespace the tree owned, in CRIU's files (criu/net.c names them by the namespace's
/// id): netns-ID.img and netdev-ID.img are protobuf images; ifaddr, route, route6, iptables,
/// ip6tables and nftables are raw (no magic): what `ip addr save`, `ip route save`,
/// `ip -6 route save`, `iptables-save`, `ip6tables-save` and `nft list ruleset` printed, fed back
/// to their restoring counterparts.
/// </summary>
public sealed class NetnsImages
{
    public NetnsEntry Netns { get; init; } = new();
    public List<NetDeviceEntry> Devices { get; init; } = [];
    /// <summary>Raw images by kind ("ifaddr", "route", "route6", "iptables", "ip6tables", "nftables"); a kind not dumped is absent.</summary>
    public Dictionary<string, byte[]> Raw { get; init; } = [];

    public static readonly string[] RawKinds = ["ifaddr", "route", "route6", "iptables", "ip6tables", "nftables"];

    public static string NetnsName(uint id) => $"netns-{id}.img";
    public static string NetdevName(uint id) => $"netdev-{id}.img";
    public static string RawName(string kind, uint id) => $"{kind}-{id}.img";

    public static bool ExistsIn(ImageDir dir, uint id) => dir.Exists(NetnsName(id));

    public void Write(ImageDir dir, uint id)
    {
        using (var w = new ImageWriter(dir.PathOf(NetnsName(id)), ImageMagic.Netns)) w.Write(Netns);
        using (var w = new ImageWriter(dir.PathOf(NetdevName(id)), ImageMagic.Netdev))
            foreach (var d in Devices) w.Write(d);
        foreach (var (kind, bytes) in Raw)
        {
            if (Array.IndexOf(RawKinds, kind) < 0) throw new ArgumentException($"no raw network image kind {kind}");
            File.WriteAllBytes(dir.PathOf(RawName(kind, id)), bytes);
        }
    }

    public static NetnsImages Read(ImageDir dir, uint id)
    {
        var r = new NetnsImages
        {
            Netns = ImageReader.ReadSingle(dir.PathOf(NetnsName(id)), ImageMagic.Netns, NetnsEntry.Parser),
            Devices = dir.Exists(NetdevName(id)) ? ImageReader.ReadAll(dir.PathOf(NetdevName(id)), ImageMagic.Netdev, NetDeviceEntry.Parser) : [],
        };
        foreach (var kind in RawKinds)
            if (dir.Exists(RawName(kind, id))) r.Raw[kind] = File.ReadAllBytes(dir.PathOf(RawName(kind, id)));
        return r;
    }
}
