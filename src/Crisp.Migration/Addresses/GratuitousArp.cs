using System.Buffers.Binary;
using System.Globalization;
using System.Net;
using Crisp.Native;

namespace Crisp.Migration.Addresses;

/// <summary>
/// A gratuitous ARP request (RFC 5227's ARP announcement: sender and target protocol address both
/// the moved address, sender hardware address ours), broadcast on one device through an AF_PACKET
/// datagram socket (the kernel adds the Ethernet header). Linux takes one as an override of a
/// neighbour entry it already has for the address (arp_is_garp), whatever its locktime, so a
/// client's next packet goes to the new host instead of the old one until its entry went stale.
/// </summary>
internal static unsafe class GratuitousArp
{
    private const ushort ETH_P_ARP = 0x0806, ETH_P_IP = 0x0800, ARPHRD_ETHER = 1, ARPOP_REQUEST = 1;

    public static void Send(string device, IPAddress address, int count = 2)
    {
        string target = $"{device} ({address})";
        var mac = Mac(device);
        int ifindex = int.Parse(File.ReadAllText($"/sys/class/net/{device}/ifindex").Trim(), CultureInfo.InvariantCulture);
        byte[] ip = address.GetAddressBytes();

        byte* arp = stackalloc byte[28];
        var a = new Span<byte>(arp, 28);
        BinaryPrimitives.WriteUInt16BigEndian(a, ARPHRD_ETHER);
        BinaryPrimitives.WriteUInt16BigEndian(a[2..], ETH_P_IP);
        a[4] = 6;
        a[5] = 4;
        BinaryPrimitives.WriteUInt16BigEndian(a[6..], ARPOP_REQUEST);
        mac.CopyTo(a[8..]);
        ip.CopyTo(a[14..]);
        a[18..24].Clear();
        ip.CopyTo(a[24..]);

        // struct sockaddr_ll: family, protocol (be16), ifindex, hatype, pkttype, halen, addr[8]
        byte* ll = stackalloc byte[20];
        var l = new Span<byte>(ll, 20);
        l.Clear();
        BinaryPrimitives.WriteUInt16LittleEndian(l, LibC.AF_PACKET);
        BinaryPrimitives.WriteUInt16BigEndian(l[2..], ETH_P_ARP);
        BinaryPrimitives.WriteInt32LittleEndian(l[4..], ifindex);
        BinaryPrimitives.WriteUInt16LittleEndian(l[8..], ARPHRD_ETHER);
        l[11] = 6;
        l[12..18].Fill(0xff);

        int fd = Errno.Check(LibC.socket(LibC.AF_PACKET, LibC.SOCK_DGRAM | LibC.SOCK_CLOEXEC, BinaryPrimitives.ReverseEndianness(ETH_P_ARP)), "socket(AF_PACKET)", target);
        try
        {
            for (int i = 0; i < count; i++)
                if (LibC.sendto(fd, arp, 28, 0, ll, 20) < 0)
                    throw Errno.Failure("sendto(gratuitous ARP)", target);
        }
        finally
        {
            LibC.close(fd);
        }
    }

    internal static byte[] Mac(string device)
    {
        string text = File.ReadAllText($"/sys/class/net/{device}/address").Trim();
        var parts = text.Split(':');
        if (parts.Length != 6) throw new CrispException($"{device}: not an Ethernet device (hardware address '{text}')");
        return parts.Select(p => byte.Parse(p, NumberStyles.HexNumber, CultureInfo.InvariantCulture)).ToArray();
    }
}
