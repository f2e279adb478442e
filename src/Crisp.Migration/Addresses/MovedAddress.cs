using System.Net;
using System.Net.Sockets;
using System.Text.Json.Nodes;
using Crisp.Native;

namespace Crisp.Migration.Addresses;

/// <summary>
/// A service address that moves with a migrated server (<c>crisp migrate --move-address ADDR</c>,
/// <c>crisp agent --move-address-dev DEV</c>): established connections to it go on only if the
/// destination answers for it and the source no longer does. The order, and why:
///
///  1. before the freeze the source finds the device holding ADDR in its network namespace (and
///     its prefix length); no such address, or the address the agent is reached from: refused;
///  2. frozen, the connections locked and in repair mode, the images written: the source deletes
///     ADDR (a packet for it now reaches no socket on the source: not even a RST answers it);
///  3. the agent adds ADDR/PREFIX on its device (IPv6 with nodad: it is free, it was just taken
///     away, and a tentative address cannot be bound) and restores;
///  4. the restored tree runs: the agent announces ADDR (a gratuitous ARP for IPv4, see
///     <see cref="GratuitousArp"/>; an unsolicited neighbour advertisement for IPv6, see
///     <see cref="UnsolicitedNa"/>) so that the clients' neighbour caches point at it at once;
///  5. failure before anything ran on the destination: the agent deletes what it added, then says
///     so; the source adds ADDR back and announces it before its tree resumes.
/// </summary>
public sealed record MovedAddress(IPAddress Address, int PrefixLength)
{
    public override string ToString() => $"{Address}/{PrefixLength}";

    public bool IsV4 => Address.AddressFamily == AddressFamily.InterNetwork;

    /// <summary>"ADDR/PREFIX" as the source sends it; refuses anything else.</summary>
    public static MovedAddress Parse(string text)
    {
        int slash = text.IndexOf('/');
        if (slash < 0 || !IPAddress.TryParse(text.AsSpan(0, slash), out var ip) || !int.TryParse(text.AsSpan(slash + 1), out int prefix)
            || prefix < 0 || prefix > (ip.AddressFamily == AddressFamily.InterNetwork ? 32 : 128) || (ip.AddressFamily == AddressFamily.InterNetworkV6 && ip.ScopeId != 0))
            throw new FormatException($"'{text}' is not ADDR/PREFIX");
        return new MovedAddress(ip, prefix);
    }

    /// <summary>The device holding <paramref name="address"/> in this network namespace and its prefix length.</summary>
    public static (MovedAddress Moved, string Device) Find(IPAddress address)
    {
        var (status, output) = IpTool.Run("-j", "addr", "show");
        if (status != 0) throw new CrispException($"ip addr show failed (status {status}): {output.Trim()}");
        foreach (var link in JsonNode.Parse(output)!.AsArray())
            foreach (var a in link!["addr_info"]?.AsArray() ?? [])
                if (a?["local"]?.GetValue<string>() is { } local && IPAddress.TryParse(local, out var ip) && ip.Equals(address))
                    return (new MovedAddress(address, a["prefixlen"]!.GetValue<int>()), link["ifname"]!.GetValue<string>());
        throw new CrispException($"--move-address {address}: no interface in this network namespace has that address");
    }

    /// <summary>Whether <paramref name="device"/> exists in this network namespace.</summary>
    public static bool DeviceExists(string device) =>
        device.Length is > 0 and < 16 && !device.Contains('/') && Directory.Exists($"/sys/class/net/{device}");

    public void Add(string device)
    {
        var (status, output) = IsV4
            ? IpTool.Run("addr", "add", ToString(), "dev", device)
            : IpTool.Run("-6", "addr", "add", ToString(), "dev", device, "nodad");
        if (status != 0) throw new CrispException($"adding {this} to {device}: ip failed (status {status}): {output.Trim()}");
    }

    public void Delete(string device)
    {
        var (status, output) = IpTool.Run(IsV4 ? "-4" : "-6", "addr", "del", ToString(), "dev", device);
        if (status != 0) throw new CrispException($"deleting {this} from {device}: ip failed (status {status}): {output.Trim()}");
    }

    /// <summary>Tells the link the address is here now (IPv4: a gratuitous ARP; IPv6: an unsolicited neighbour advertisement).</summary>
    public void Announce(string device)
    {
        try
        {
            if (IsV4) GratuitousArp.Send(device, Address);
            else UnsolicitedNa.Send(device, Address);
        }
        catch (Exception e) when (e is SyscallException or CrispException or IOException)
        {
            // The connections still go on: the peers' neighbour caches expire and ask again, only later.
            Log.W($"announcing {Address} on {device}: {e.Message}");
        }
    }
}
