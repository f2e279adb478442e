using System.Buffers.Binary;
using System.Globalization;
using System.Net;
using Crisp.Native;

namespace Crisp.Migration.Addresses;

/// <summary>
/// IPv6's gratuitous ARP: an unsolicited Neighbor Advertisement (RFC 4861 7.2.6) for the moved
/// address, Override flag set, our hardware address as its Target Link-Layer Address option, sent
/// to all nodes (ff02::1) on one device with hop limit 255 (a receiver drops any other). Linux takes
/// it as an update of a neighbour entry it already has for the address (state STALE, the new
/// hardware address), so a client's next packet goes to the new host at once instead of after its
/// entry timed out and was probed (about half a minute). A raw ICMPv6 socket: the kernel adds the
/// IPv6 header and the checksum.
/// </summary>
internal static unsafe class UnsolicitedNa
{
    private const int IPPROTO_ICMPV6 = 58, IPV6_MULTICAST_IF = 17, IPV6_MULTICAST_HOPS = 18;
    private const byte ND_NEIGHBOR_ADVERT = 136, NA_OVERRIDE = 0x20, OPT_TARGET_LLADDR = 2;

    public static void Send(string device, IPAddress address, int count = 2)
    {
        string target = $"{device} ({address})";
        var mac = GratuitousArp.Mac(device);
        int ifindex = int.Parse(File.ReadAllText($"/sys/class/net/{device}/ifindex").Trim(), CultureInfo.InvariantCulture);

        byte* na = stackalloc byte[32];
        var m = new Span<byte>(na, 32);
        m.Clear();
        m[0] = ND_NEIGHBOR_ADVERT;                  // code 0, checksum by the kernel
        m[4] = NA_OVERRIDE;                         // not a router, not solicited
        address.GetAddressBytes().CopyTo(m[8..]);   // target
        m[24] = OPT_TARGET_LLADDR;
        m[25] = 1;                                  // option length in units of 8 bytes
        mac.CopyTo(m[26..]);

        var src = SockAddr(address.GetAddressBytes(), 0);
        var dst = SockAddr(IPAddress.Parse("ff02::1").GetAddressBytes(), (uint)ifindex);
        int fd = Errno.Check(LibC.socket(LibC.AF_INET6, LibC.SOCK_RAW | LibC.SOCK_CLOEXEC, IPPROTO_ICMPV6), "socket(AF_INET6, SOCK_RAW, IPPROTO_ICMPV6)", target);
        try
        {
            LibC.SetSockOptInt(fd, LibC.IPPROTO_IPV6, IPV6_MULTICAST_HOPS, 255, target);
            LibC.SetSockOptInt(fd, LibC.IPPROTO_IPV6, IPV6_MULTICAST_IF, ifindex, target);
            // From the moved address itself (it is ours now, added without DAD).
            fixed (byte* s = src) Errno.Check(LibC.bind(fd, s, (uint)src.Length), "bind", target);
            for (int i = 0; i < count; i++)
                fixed (byte* d = dst)
                    if (LibC.sendto(fd, na, 32, 0, d, (uint)dst.Length) < 0)
                        throw new SyscallException("sendto(unsolicited neighbor advertisement)", Errno.Last, target);
        }
        finally
        {
            LibC.close(fd);
        }
    }

    private static byte[] SockAddr(byte[] addr, uint scope)
    {
        var sa = new byte[28];   // sockaddr_in6: family, port, flowinfo, addr[16], scope_id
        BinaryPrimitives.WriteUInt16LittleEndian(sa, LibC.AF_INET6);
        addr.CopyTo(sa, 8);
        BinaryPrimitives.WriteUInt32LittleEndian(sa.AsSpan(24), scope);
        return sa;
    }
}
