using System.Buffers.Binary;
using Crisp.Native;

namespace Crisp.Checkpoint.Sockets;

/// <summary>
/// packet_diag (linux/packet_diag.h): what the kernel tells of every AF_PACKET socket of the
/// namespace, bound device, ring geometry and fanout group included. getsockopt cannot read back
/// a ring's geometry, the multicast memberships nor (for SOCK_PACKET) the device.
/// </summary>
internal static unsafe partial class SockDiag
{
    private const uint PACKET_SHOW_INFO = 1, PACKET_SHOW_MCLIST = 2, PACKET_SHOW_RING_CFG = 4, PACKET_SHOW_FANOUT = 8;
    private const int PACKET_DIAG_INFO = 0, PACKET_DIAG_MCLIST = 1, PACKET_DIAG_RX_RING = 2, PACKET_DIAG_TX_RING = 3, PACKET_DIAG_FANOUT = 4;

    public const uint PDI_RUNNING = 1, PDI_AUXDATA = 2, PDI_ORIGDEV = 4, PDI_VNETHDR = 8, PDI_LOSS = 0x10;

    /// <summary>struct packet_diag_mclist: one PACKET_ADD_MEMBERSHIP (Count: how many times it was added).</summary>
    public sealed record PacketMembership(uint Index, uint Count, ushort Type, byte[] Addr);

    /// <summary>struct packet_diag_ring (tpacket_req3's fields).</summary>
    public sealed record PacketRing(uint BlockSize, uint BlockNr, uint FrameSize, uint FrameNr, uint RetireTmo, uint SizeofPriv, uint Features);

    /// <summary>One packet socket; Protocol is the ethertype in host order (pdiag_num), Fanout null when in no group.</summary>
    public sealed record PacketSocket(uint Ino, int Type, ushort Protocol)
    {
        public uint IfIndex { get; set; }
        public uint Version { get; set; }
        public uint Reserve { get; set; }
        public uint CopyThresh { get; set; }
        public uint Tstamp { get; set; }
        public uint Flags { get; set; }
        public List<PacketMembership> Memberships { get; } = [];
        public PacketRing? Rx { get; set; }
        public PacketRing? Tx { get; set; }
        public uint? Fanout { get; set; }
        public bool HasInfo { get; set; }
    }

    /// <summary>Every AF_PACKET socket of the namespace, by inode.</summary>
    public static Dictionary<uint, PacketSocket> PacketSockets()
    {
        var req = new byte[20];   // struct packet_diag_req
        req[0] = LibC.AF_PACKET;
        BinaryPrimitives.WriteUInt32LittleEndian(req.AsSpan(8), PACKET_SHOW_INFO | PACKET_SHOW_MCLIST | PACKET_SHOW_RING_CFG | PACKET_SHOW_FANOUT);
        BinaryPrimitives.WriteUInt32LittleEndian(req.AsSpan(12), 0xffffffff);  // no cookie
        BinaryPrimitives.WriteUInt32LittleEndian(req.AsSpan(16), 0xffffffff);
        var result = new Dictionary<uint, PacketSocket>();
        Dump(req, "packet_diag", msg =>
        {
            if (msg.Length < 16) return;
            var s = new PacketSocket(BinaryPrimitives.ReadUInt32LittleEndian(msg[4..]), msg[1], BinaryPrimitives.ReadUInt16LittleEndian(msg[2..]));
            foreach (var (type, data) in Attributes(msg[16..]))
            {
                var d = data.AsSpan();
                uint U(int i) => BinaryPrimitives.ReadUInt32LittleEndian(data.AsSpan(4 * i));
                switch (type)
                {
                    case PACKET_DIAG_INFO when d.Length >= 24:
                        s.HasInfo = true;
                        s.IfIndex = U(0); s.Version = U(1); s.Reserve = U(2); s.CopyThresh = U(3); s.Tstamp = U(4); s.Flags = U(5);
                        break;
                    case PACKET_DIAG_MCLIST:
                        for (int off = 0; off + 44 <= d.Length; off += 44)
                        {
                            var m = d[off..];
                            ushort alen = BinaryPrimitives.ReadUInt16LittleEndian(m[10..]);
                            s.Memberships.Add(new PacketMembership(BinaryPrimitives.ReadUInt32LittleEndian(m), BinaryPrimitives.ReadUInt32LittleEndian(m[4..]),
                                BinaryPrimitives.ReadUInt16LittleEndian(m[8..]), m.Slice(12, Math.Min((int)alen, 32)).ToArray()));
                        }
                        break;
                    case PACKET_DIAG_RX_RING or PACKET_DIAG_TX_RING when d.Length >= 28:
                        var ring = new PacketRing(U(0), U(1), U(2), U(3), U(4), U(5), U(6));
                        if (type == PACKET_DIAG_RX_RING) s.Rx = ring; else s.Tx = ring;
                        break;
                    case PACKET_DIAG_FANOUT when d.Length >= 4:
                        s.Fanout = U(0);
                        break;
                }
            }
            result[s.Ino] = s;
        });
        return result;
    }
}
