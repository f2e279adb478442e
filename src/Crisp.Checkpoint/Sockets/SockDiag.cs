using System.Buffers.Binary;
using Crisp.Native;

namespace Crisp.Checkpoint.Sockets;

/// <summary>
/// What NETLINK_SOCK_DIAG says about the sockets of the dumped tree's network namespace (crisp's,
/// or the one the tree owns: SockDiag.Netns.cs). It is the only place the kernel tells a unix
/// socket's peer inode, its shutdown state, the connections waiting in a listener's queue
/// (UNIX_DIAG_ICONS) and a listener's backlog; getsockopt tells none of them.
/// </summary>
internal static unsafe partial class SockDiag
{
    private const int NETLINK_SOCK_DIAG = 4, SOCK_DIAG_BY_FAMILY = 20;
    private const ushort NLM_F_REQUEST = 1, NLM_F_DUMP = 0x300;
    private const int NLMSG_ERROR = 2, NLMSG_DONE = 3;

    // unix_diag_req.udiag_show
    private const uint UDIAG_SHOW_NAME = 1, UDIAG_SHOW_VFS = 2, UDIAG_SHOW_PEER = 4, UDIAG_SHOW_ICONS = 8,
        UDIAG_SHOW_RQLEN = 0x10;
    // unix_diag_msg attributes
    private const int UNIX_DIAG_NAME = 0, UNIX_DIAG_VFS = 1, UNIX_DIAG_PEER = 2, UNIX_DIAG_ICONS = 3,
        UNIX_DIAG_RQLEN = 4, UNIX_DIAG_SHUTDOWN = 6;
    private const int INET_DIAG_SHUTDOWN = 8;

    /// <summary>One LibC.AF_UNIX socket as unix_diag reports it.</summary>
    public sealed record UnixSocket(uint Ino, int Type, int State)
    {
        public byte[] Name { get; set; } = [];
        public uint VfsIno { get; set; }
        public uint VfsDev { get; set; }
        public uint Peer { get; set; }
        public uint[] Icons { get; set; } = [];
        public uint RecvQueue { get; set; }
        public uint SendQueueOrBacklog { get; set; }  // for a listener: its backlog (sk_max_ack_backlog)
        public int Shutdown { get; set; }
    }

    /// <summary>One AF_INET/AF_INET6 socket as inet_diag reports it.</summary>
    public sealed record InetSocket(uint Ino, int State, uint RecvQueue, uint SendQueueOrBacklog, int Shutdown);

    /// <summary>Every unix socket of the namespace, by inode.</summary>
    public static Dictionary<uint, UnixSocket> UnixSockets()
    {
        var req = new byte[24];
        req[0] = LibC.AF_UNIX;
        BinaryPrimitives.WriteUInt32LittleEndian(req.AsSpan(4), 0xffffffff);   // every state
        BinaryPrimitives.WriteUInt32LittleEndian(req.AsSpan(12),
            UDIAG_SHOW_NAME | UDIAG_SHOW_VFS | UDIAG_SHOW_PEER | UDIAG_SHOW_ICONS | UDIAG_SHOW_RQLEN);
        BinaryPrimitives.WriteUInt32LittleEndian(req.AsSpan(16), 0xffffffff);  // no cookie
        BinaryPrimitives.WriteUInt32LittleEndian(req.AsSpan(20), 0xffffffff);
        var result = new Dictionary<uint, UnixSocket>();
        Dump(req, "unix_diag", msg =>
        {
            if (msg.Length < 16) return;
            var s = new UnixSocket(BinaryPrimitives.ReadUInt32LittleEndian(msg[4..]), msg[1], msg[2]);
            foreach (var (type, data) in Attributes(msg[16..]))
            {
                switch (type)
                {
                    case UNIX_DIAG_NAME: s.Name = data.ToArray(); break;
                    case UNIX_DIAG_VFS:
                        s.VfsIno = BinaryPrimitives.ReadUInt32LittleEndian(data);
                        s.VfsDev = BinaryPrimitives.ReadUInt32LittleEndian(data[4..]);
                        break;
                    case UNIX_DIAG_PEER: s.Peer = BinaryPrimitives.ReadUInt32LittleEndian(data); break;
                    case UNIX_DIAG_ICONS:
                        var icons = new uint[data.Length / 4];
                        for (int i = 0; i < icons.Length; i++) icons[i] = BinaryPrimitives.ReadUInt32LittleEndian(data[(4 * i)..]);
                        s.Icons = icons;
                        break;
                    case UNIX_DIAG_RQLEN:
                        s.RecvQueue = BinaryPrimitives.ReadUInt32LittleEndian(data);
                        s.SendQueueOrBacklog = BinaryPrimitives.ReadUInt32LittleEndian(data[4..]);
                        break;
                    case UNIX_DIAG_SHUTDOWN: s.Shutdown = data[0]; break;
                }
            }
            result[s.Ino] = s;
        });
        return result;
    }

    /// <summary>One AF_NETLINK socket as netlink_diag reports it; Groups is the joined-groups bit mask, 32 per word.</summary>
    public sealed record NetlinkSocket(uint Ino, int Protocol, int State, uint PortId, uint DstPortId, uint DstGroup, uint[] Groups);

    private const uint NDIAG_SHOW_GROUPS = 2;
    private const int NETLINK_DIAG_GROUPS = 1;

    /// <summary>Every netlink socket of the namespace that netlink_diag lists (bound or connected ones), by inode.</summary>
    public static Dictionary<uint, NetlinkSocket> NetlinkSockets()
    {
        var req = new byte[20];
        req[0] = LibC.AF_NETLINK;
        req[1] = 255;                                                           // NDIAG_PROTO_ALL
        BinaryPrimitives.WriteUInt32LittleEndian(req.AsSpan(8), NDIAG_SHOW_GROUPS);
        BinaryPrimitives.WriteUInt32LittleEndian(req.AsSpan(12), 0xffffffff);  // no cookie
        BinaryPrimitives.WriteUInt32LittleEndian(req.AsSpan(16), 0xffffffff);
        var result = new Dictionary<uint, NetlinkSocket>();
        Dump(req, "netlink_diag", msg =>
        {
            if (msg.Length < 28) return;
            uint[] groups = [];
            foreach (var (type, data) in Attributes(msg[28..]))
                if (type == NETLINK_DIAG_GROUPS)
                {
                    groups = new uint[data.Length / 4];
                    for (int i = 0; i < groups.Length; i++) groups[i] = BinaryPrimitives.ReadUInt32LittleEndian(data.AsSpan(4 * i));
                }
            var s = new NetlinkSocket(BinaryPrimitives.ReadUInt32LittleEndian(msg[16..]), msg[2], msg[3],
                BinaryPrimitives.ReadUInt32LittleEndian(msg[4..]), BinaryPrimitives.ReadUInt32LittleEndian(msg[8..]),
                BinaryPrimitives.ReadUInt32LittleEndian(msg[12..]), groups);
            result[s.Ino] = s;
        });
        return result;
    }

    /// <summary>The inet socket with inode <paramref name="ino"/>, or null when the dump does not list it.</summary>
    public static InetSocket? FindInet(int family, int protocol, uint ino)
    {
        var req = new byte[56];
        req[0] = (byte)family;
        req[1] = (byte)protocol;
        req[2] = 1 << (INET_DIAG_SHUTDOWN - 1);                                  // idiag_ext
        BinaryPrimitives.WriteUInt32LittleEndian(req.AsSpan(4), 0xffffffff);      // every state
        BinaryPrimitives.WriteUInt32LittleEndian(req.AsSpan(48), 0xffffffff);     // no cookie
        BinaryPrimitives.WriteUInt32LittleEndian(req.AsSpan(52), 0xffffffff);
        InetSocket? found = null;
        Dump(req, "inet_diag", msg =>
        {
            if (msg.Length < 72 || found != null) return;
            uint inode = BinaryPrimitives.ReadUInt32LittleEndian(msg[68..]);
            if (inode != ino) return;
            int shutdown = 0;
            foreach (var (type, data) in Attributes(msg[72..]))
                if (type == INET_DIAG_SHUTDOWN && data.Length > 0) shutdown = data[0];
            found = new InetSocket(inode, msg[1], BinaryPrimitives.ReadUInt32LittleEndian(msg[56..]),
                BinaryPrimitives.ReadUInt32LittleEndian(msg[60..]), shutdown);
        });
        return found;
    }

    private delegate void MessageHandler(ReadOnlySpan<byte> payload);

    /// <summary>Sends one SOCK_DIAG_BY_FAMILY dump request and hands every answer's payload to <paramref name="handle"/>.</summary>
    private static void Dump(byte[] request, string what, MessageHandler handle)
    {
        int nl = OpenDiagSocket(NETLINK_SOCK_DIAG, what);
        try
        {
            var msg = new byte[16 + request.Length];
            BinaryPrimitives.WriteUInt32LittleEndian(msg, (uint)msg.Length);
            BinaryPrimitives.WriteUInt16LittleEndian(msg.AsSpan(4), SOCK_DIAG_BY_FAMILY);
            BinaryPrimitives.WriteUInt16LittleEndian(msg.AsSpan(6), NLM_F_REQUEST | NLM_F_DUMP);
            BinaryPrimitives.WriteUInt32LittleEndian(msg.AsSpan(8), 1);
            request.CopyTo(msg, 16);
            fixed (byte* m = msg)
                Errno.Check(LibC.sendto(nl, m, (nuint)msg.Length, 0, null, 0), "sendto", what);
            var buf = new byte[64 * 1024];
            while (true)
            {
                nint n;
                fixed (byte* b = buf) n = Errno.Check(LibC.recvfrom(nl, b, (nuint)buf.Length, 0, null, null), "recvfrom", what);
                if (n == 0) throw new CrispException($"{what}: the kernel closed the netlink socket mid-dump");
                int off = 0;
                while (off + 16 <= n)
                {
                    var span = buf.AsSpan(off, (int)n - off);
                    int len = (int)BinaryPrimitives.ReadUInt32LittleEndian(span);
                    int type = BinaryPrimitives.ReadUInt16LittleEndian(span[4..]);
                    if (len < 16 || len > span.Length) throw new CrispException($"{what}: malformed netlink message");
                    if (type == NLMSG_DONE) return;
                    if (type == NLMSG_ERROR)
                    {
                        int err = -BinaryPrimitives.ReadInt32LittleEndian(span[16..]);
                        if (err == 0) return;
                        throw new SyscallException(what, err, "sock_diag dump");
                    }
                    handle(span[16..len]);
                    off += (len + 3) & ~3;
                }
            }
        }
        finally { LibC.close(nl); }
    }

    private static List<(int Type, byte[] Data)> Attributes(ReadOnlySpan<byte> rest)
    {
        var list = new List<(int, byte[])>();
        while (rest.Length >= 4)
        {
            int len = BinaryPrimitives.ReadUInt16LittleEndian(rest);
            int type = BinaryPrimitives.ReadUInt16LittleEndian(rest[2..]);
            if (len < 4 || len > rest.Length) break;
            list.Add((type & 0x3fff, rest[4..len].ToArray()));
            int step = (len + 3) & ~3;
            if (step >= rest.Length) break;
            rest = rest[step..];
        }
        return list;
    }
}
