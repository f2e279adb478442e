using System.Buffers.Binary;
using Crisp.Checkpoint.Sockets;
using Crisp.Images;
using Crisp.Images.Proto;
using Crisp.Native;

namespace Crisp.Checkpoint.Restore;

/// <summary>
/// AF_PACKET sockets (Sockets/PacketSocketDump.cs), made by crisp like the others and handed to
/// the processes from <c>_c.CrispCopies</c>. In the order the kernel needs: bound to the dumped
/// device (a SOCK_PACKET one by the device's name, which SIOCGIFNAME gives for the index), then
/// PACKET_VERSION and PACKET_RESERVE before the rings (a ring's frame layout depends on them),
/// the switches, the memberships, the rings, and the fanout group last (joining one needs a bound
/// protocol). A process's mapping of the rings (VMA_AREA_SOCKET) is mapped from this socket.
/// </summary>
internal sealed unsafe partial class RestoreSession
{
    private const int SIOCGIFNAME = 0x8910;

    private static int CreatePacket(PacketSockEntry e)
    {
        string target = $"packet socket {e.Id} (type {e.Type}, protocol 0x{(ushort)System.Net.IPAddress.NetworkToHostOrder((short)e.Protocol):x4}, interface {e.Ifindex})";
        int fd = Errno.Check(LibC.socket(LibC.AF_PACKET, (int)e.Type | LibC.SOCK_CLOEXEC | LibC.SOCK_NONBLOCK, (int)e.Protocol), "socket(AF_PACKET)", target);
        try
        {
            SocketOptions.RestoreBeforeBind(fd, e.Opts, target);
            if (e.Type == SocketDump.SOCK_PACKET) BindSpkt(fd, e.Ifindex, target);
            else
            {
                var sa = new byte[20];   // struct sockaddr_ll; protocol 0 keeps the socket's own
                BinaryPrimitives.WriteUInt16LittleEndian(sa, LibC.AF_PACKET);
                BinaryPrimitives.WriteInt32LittleEndian(sa.AsSpan(4), (int)e.Ifindex);
                fixed (byte* a = sa) Errno.Check(LibC.bind(fd, a, (uint)sa.Length), $"bind(interface {e.Ifindex})", target);
                const int P = SocketDump.SOL_PACKET;
                LibC.SetSockOptInt(fd, P, SocketDump.PACKET_VERSION, (int)e.Version, target);
                LibC.SetSockOptInt(fd, P, SocketDump.PACKET_RESERVE, (int)e.Reserve, target);
                LibC.SetSockOptInt(fd, P, SocketDump.PACKET_TIMESTAMP, (int)e.Timestamp, target);
                LibC.SetSockOptInt(fd, P, SocketDump.PACKET_COPY_THRESH, (int)e.CopyThresh, target);
                if (e.AuxData) LibC.SetSockOptInt(fd, P, SocketDump.PACKET_AUXDATA, 1, target);
                if (e.OrigDev) LibC.SetSockOptInt(fd, P, SocketDump.PACKET_ORIGDEV, 1, target);
                if (e.VnetHdr) LibC.SetSockOptInt(fd, P, SocketDump.PACKET_VNET_HDR, 1, target);
                if (e.Loss) LibC.SetSockOptInt(fd, P, SocketDump.PACKET_LOSS, 1, target);
                foreach (var m in e.Mclist) AddMembership(fd, m, target);
                if (e.RxRing != null) SetRing(fd, SocketDump.PACKET_RX_RING, e.RxRing, target);
                if (e.TxRing != null) SetRing(fd, SocketDump.PACKET_TX_RING, e.TxRing, target);
                if (e.HasFanout) LibC.SetSockOptInt(fd, P, SocketDump.PACKET_FANOUT, (int)e.Fanout, target);
            }
            SocketOptions.Restore(fd, e.Opts, target);
            FinishSocket(fd, e.Flags, e.Opts, target);
            return fd;
        }
        catch
        {
            LibC.close(fd);
            throw;
        }
    }

    /// <summary>A SOCK_PACKET socket is bound by device name (struct sockaddr's sa_data); index 0: it was not bound.</summary>
    private static void BindSpkt(int fd, uint ifindex, string target)
    {
        if (ifindex == 0) return;
        var ifr = new byte[40];   // struct ifreq
        BinaryPrimitives.WriteInt32LittleEndian(ifr.AsSpan(16), (int)ifindex);
        fixed (byte* r = ifr) Errno.Check(LibC.ioctl(fd, SIOCGIFNAME, r), $"ioctl(SIOCGIFNAME, {ifindex})", target);
        var sa = new byte[16];    // struct sockaddr: family, then the name in 14 bytes
        BinaryPrimitives.WriteUInt16LittleEndian(sa, LibC.AF_PACKET);
        ifr.AsSpan(0, 13).CopyTo(sa.AsSpan(2));
        string name = System.Text.Encoding.ASCII.GetString(ifr, 0, 16).TrimEnd('\0');
        fixed (byte* a = sa) Errno.Check(LibC.bind(fd, a, (uint)sa.Length), $"bind({name})", target);
    }

    private static void AddMembership(int fd, PacketMclist m, string target)
    {
        if (m.Addr.Length > 32) throw new ImageException("files.img", $"{target}: a membership address of {m.Addr.Length} bytes (32 at most)");
        var mreq = new byte[40];   // struct packet_mreq with room for MAX_ADDR_LEN bytes of address
        BinaryPrimitives.WriteInt32LittleEndian(mreq, (int)m.Index);
        BinaryPrimitives.WriteUInt16LittleEndian(mreq.AsSpan(4), (ushort)m.Type);
        BinaryPrimitives.WriteUInt16LittleEndian(mreq.AsSpan(6), (ushort)m.Addr.Length);
        m.Addr.Span.CopyTo(mreq.AsSpan(8));
        fixed (byte* p = mreq)
            Errno.Check(LibC.setsockopt(fd, SocketDump.SOL_PACKET, SocketDump.PACKET_ADD_MEMBERSHIP, p, (uint)mreq.Length),
                $"setsockopt(PACKET_ADD_MEMBERSHIP, type {m.Type}, interface {m.Index})", target);
    }

    private static void SetRing(int fd, int opt, PacketRing r, string target)
    {
        uint* req = stackalloc uint[7];   // struct tpacket_req3
        req[0] = r.BlockSize; req[1] = r.BlockNr; req[2] = r.FrameSize; req[3] = r.FrameNr;
        req[4] = r.RetireTmo; req[5] = r.SizeofPriv; req[6] = r.Features;
        Errno.Check(LibC.setsockopt(fd, SocketDump.SOL_PACKET, opt, req, 28),
            $"setsockopt({(opt == SocketDump.PACKET_RX_RING ? "PACKET_RX_RING" : "PACKET_TX_RING")}, {r.BlockNr} block(s) of {r.BlockSize}, {r.FrameNr} frame(s) of {r.FrameSize})", target);
    }

    private static bool IsSocketMap(VmaEntry v) => (v.Status & VmaStatus.VMA_AREA_SOCKET) != 0;

    /// <summary>The packet socket a ring mapping maps, as a new fd of the task for its mmap (the caller closes it).</summary>
    private int PacketRingIntoTask(ProcessImage p, RestoreTask t, VmaEntry v)
    {
        string what = $"the packet socket (file {v.Shmid}) mapped at 0x{v.Start:x} in process {p.Pid}";
        if (!_c.CrispCopies.TryGetValue((uint)v.Shmid, out int local))
            throw new CrispException($"{what}: the images have no packet socket with that id");
        return CrispFdIntoTask(p, t, local, what);
    }
}
