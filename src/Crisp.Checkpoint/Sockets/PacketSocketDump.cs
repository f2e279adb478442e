using Crisp.Images.Proto;
using Crisp.Native;

namespace Crisp.Checkpoint.Sockets;

/// <summary>
/// AF_PACKET sockets (packet_sock_entry, as CRIU keeps them): SOCK_RAW and SOCK_DGRAM ones with
/// their protocol, bound device, PACKET_VERSION, PACKET_RESERVE, PACKET_TIMESTAMP,
/// PACKET_COPY_THRESH, the auxdata / origdev / vnet_hdr / loss switches, multicast memberships,
/// the rx and tx ring geometry and the fanout group; SOCK_PACKET ones with their protocol and
/// device. packet_diag tells all of it (SockDiag.Packet.cs). Packets queued at dump time are
/// dropped, as CRIU does (they are traffic the program may lose anyway); the frames in a ring
/// start empty again.
///
/// Refused, naming the fd: options CRIU's image has no place for (PACKET_QDISC_BYPASS,
/// PACKET_TX_HAS_OFF, PACKET_IGNORE_OUTGOING, a vnet header size other than PACKET_VNET_HDR's),
/// a fanout group steered by a BPF program (the program cannot be read back), a membership of
/// an unknown kind.
/// </summary>
internal sealed partial class SocketDump
{
    public const int SOL_PACKET = 263;
    public const int SOCK_PACKET = 10;
    public const int PACKET_ADD_MEMBERSHIP = 1, PACKET_RX_RING = 5, PACKET_COPY_THRESH = 7, PACKET_AUXDATA = 8, PACKET_VERSION = 10,
        PACKET_RESERVE = 12, PACKET_TX_RING = 13, PACKET_LOSS = 14, PACKET_VNET_HDR = 15, PACKET_TIMESTAMP = 17, PACKET_FANOUT = 18,
        PACKET_ORIGDEV = 9;
    private const int PACKET_TX_HAS_OFF = 19, PACKET_QDISC_BYPASS = 20, PACKET_IGNORE_OUTGOING = 23, PACKET_VNET_HDR_SZ = 24;
    private const int PACKET_MR_MULTICAST = 0, PACKET_MR_PROMISC = 1, PACKET_MR_ALLMULTI = 2, PACKET_MR_UNICAST = 3;
    private const uint PACKET_FANOUT_CBPF = 6, PACKET_FANOUT_EBPF = 7;
    private const int VirtioNetHdrSize = 10;   // sizeof(struct virtio_net_hdr): what PACKET_VNET_HDR sets

    private Dictionary<uint, SockDiag.PacketSocket>? _packetDiag;

    private unsafe FileEntry DumpPacket(int local, uint id, int fileFlags, uint ino, int type, string target)
    {
        string kind = type == SOCK_PACKET ? "a packet socket (SOCK_PACKET)" : $"a packet socket ({TypeName(type)})";
        if (type is not (LibC.SOCK_RAW or LibC.SOCK_DGRAM or SOCK_PACKET))
            throw new CrispException($"{target} is {kind}: not supported yet");
        _packetDiag ??= SockDiag.PacketSockets();
        if (!_packetDiag.TryGetValue(ino, out var d) || !d.HasInfo)
            throw new CrispException($"{target} is {kind} that packet_diag does not list (is it in another network namespace?): not supported yet");
        if (type != SOCK_PACKET)
        {
            foreach (var (opt, name) in new[] { (PACKET_QDISC_BYPASS, "PACKET_QDISC_BYPASS"), (PACKET_TX_HAS_OFF, "PACKET_TX_HAS_OFF"), (PACKET_IGNORE_OUTGOING, "PACKET_IGNORE_OUTGOING") })
            {
                int v = 0;
                uint len = sizeof(int);
                if (LibC.getsockopt(local, SOL_PACKET, opt, &v, &len) == 0 && v != 0)
                    throw new CrispException($"{target} is {kind} with {name} set: not supported (CRIU's image has no place for it)");
            }
            int hdr = 0;
            uint hlen = sizeof(int);
            if (LibC.getsockopt(local, SOL_PACKET, PACKET_VNET_HDR_SZ, &hdr, &hlen) == 0 && hdr is not (0 or VirtioNetHdrSize))
                throw new CrispException($"{target} is {kind} with a vnet header of {hdr} bytes (PACKET_VNET_HDR_SZ): not supported (CRIU's image has no place for it)");
        }
        var e = new PacketSockEntry
        {
            Id = id, Type = (uint)type, Protocol = (uint)(ushort)System.Net.IPAddress.HostToNetworkOrder((short)d.Protocol),
            Flags = (uint)fileFlags, Ifindex = d.IfIndex, Fown = NoOwner(), Opts = SocketOptions.Dump(local, target),
            Version = d.Version, Reserve = d.Reserve, Timestamp = d.Tstamp, CopyThresh = d.CopyThresh,
            AuxData = (d.Flags & SockDiag.PDI_AUXDATA) != 0, OrigDev = (d.Flags & SockDiag.PDI_ORIGDEV) != 0,
            VnetHdr = (d.Flags & SockDiag.PDI_VNETHDR) != 0, Loss = (d.Flags & SockDiag.PDI_LOSS) != 0,
        };
        foreach (var m in d.Memberships)
        {
            if (m.Type is not (PACKET_MR_MULTICAST or PACKET_MR_PROMISC or PACKET_MR_ALLMULTI or PACKET_MR_UNICAST))
                throw new CrispException($"{target} is {kind} with a membership of unknown type {m.Type} on interface {m.Index}: not supported");
            bool addr = m.Type is PACKET_MR_MULTICAST or PACKET_MR_UNICAST;
            // The kernel counts a membership added n times; restore adds each entry once (CRIU's
            // restore does the same with the same entries), so it is written n times.
            for (uint i = 0; i < Math.Max(m.Count, 1u); i++)
                e.Mclist.Add(new PacketMclist
                {
                    Index = m.Index, Type = m.Type,
                    Addr = addr ? Google.Protobuf.ByteString.CopyFrom(m.Addr) : Google.Protobuf.ByteString.Empty,
                });
        }
        if (d.Fanout is uint fanout)
        {
            uint fanoutType = (fanout >> 16) & 0xff;
            if (fanoutType is PACKET_FANOUT_CBPF or PACKET_FANOUT_EBPF)
                throw new CrispException($"{target} is {kind} in fanout group {fanout & 0xffff} steered by a BPF program: not supported (the program cannot be read back)");
            e.Fanout = fanout;
        }
        if (d.Rx != null) e.RxRing = Ring(d.Rx);
        if (d.Tx != null) e.TxRing = Ring(d.Tx);
        var pfd = new LibC.PollFd { fd = local, events = LibC.POLLIN };
        if (Errno.Check(LibC.poll(&pfd, 1, 0), "poll", target) > 0 && (pfd.revents & LibC.POLLIN) != 0)
            Log.I($"{target}: the packets queued on {kind} are dropped, as CRIU does");
        _packetInodes[ino] = id;
        return new FileEntry { Type = FdTypes.Packetsk, Id = id, Psk = e };
    }

    private readonly Dictionary<uint, uint> _packetInodes = [];

    /// <summary>The file id of the packet socket with inode <paramref name="ino"/>, if the tree holds it by an fd.</summary>
    public uint? PacketSocketId(uint ino) => _packetInodes.TryGetValue(ino, out var id) ? id : null;

    private static Images.Proto.PacketRing Ring(SockDiag.PacketRing r) => new()
    {
        BlockSize = r.BlockSize, BlockNr = r.BlockNr, FrameSize = r.FrameSize, FrameNr = r.FrameNr,
        RetireTmo = r.RetireTmo, SizeofPriv = r.SizeofPriv, Features = r.Features,
    };
}
