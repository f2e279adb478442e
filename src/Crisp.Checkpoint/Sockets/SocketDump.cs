using System.Buffers.Binary;
using Crisp.Images;
using Crisp.Images.Proto;
using Crisp.Native;

namespace Crisp.Checkpoint.Sockets;

/// <summary>
/// The sockets of a tree being dumped, in CRIU's image form (unix_sk_entry and inet_sk_entry in
/// files.img, queued data in sk-queues.img).
///
/// Each socket is taken into crisp with pidfd_getfd: getsockopt, getsockname and peeking at the
/// receive queue work on that copy exactly as in the owner, since it is the same socket. What
/// getsockopt cannot tell (a unix socket's peer, its shutdown state, the connections a listener
/// has not accepted yet, a listener's backlog) comes from sock_diag.
///
/// Peers are checked once every process was collected (<see cref="Finish"/>): a unix socket whose
/// peer is not in the tree is refused, naming the fd, unless it is a datagram socket sending to a
/// named socket and --ext-unix-sk was given (CRIU's rule), in which case the peer is written as an
/// external entry and restore connects to its name again.
///
/// Queued data is read without consuming it: SO_PEEK_OFF set to 0 makes each MSG_PEEK read go on
/// where the previous one stopped, then the socket's own peek offset is put back.
/// </summary>
internal sealed unsafe partial class SocketDump(bool extUnixSk, bool tcpClose, TcpRepairDump? tcp = null, bool skipInFlight = false)
{
    public const uint USK_EXTERN = 1;

    private Dictionary<uint, SockDiag.UnixSocket>? _unixDiag;
    private readonly Dictionary<uint, (UnixSkEntry Entry, int Pid, int Fd)> _unix = [];
    private readonly List<SkPacket> _packets = [];
    private readonly List<FileEntry> _externals = [];

    public IReadOnlyList<SkPacket> Packets => _packets;

    /// <summary>Descriptors passed with SCM_RIGHTS and not received yet, as crisp's fds: <paramref name="Rights"/> gets their file ids.</summary>
    public sealed record FilesInFlight(ScmEntry Rights, int[] Fds, int Owner, string Queue);

    private readonly List<FilesInFlight> _inFlight = [];

    /// <summary>The files in flight found since the last call; the caller owns (and closes) their fds.</summary>
    public List<FilesInFlight> TakeInFlight()
    {
        var list = _inFlight.ToList();
        _inFlight.Clear();
        return list;
    }

    /// <summary>A new file entry for socket <paramref name="fd"/> of <paramref name="pid"/>; refuses what crisp cannot restore.</summary>
    public FileEntry Dump(int pid, int pidfd, int fd, uint id, int fileFlags, ulong ino)
    {
        string target = $"process {pid}: fd {fd} (socket:[{ino}])";
        int local = LibC.pidfd_getfd(pidfd, fd);
        Errno.Check(local, "pidfd_getfd", target);
        try
        {
            int family = LibC.GetSockOptInt(local, LibC.SOL_SOCKET, LibC.SO_DOMAIN, target);
            int type = LibC.GetSockOptInt(local, LibC.SOL_SOCKET, LibC.SO_TYPE, target);
            int proto = LibC.GetSockOptInt(local, LibC.SOL_SOCKET, LibC.SO_PROTOCOL, target);
            return family switch
            {
                LibC.AF_UNIX => DumpUnix(pid, fd, local, id, fileFlags, (uint)ino, type, target),
                LibC.AF_INET or LibC.AF_INET6 => DumpInet(local, id, fileFlags, (uint)ino, family, type, proto, target),
                LibC.AF_NETLINK => DumpNetlink(local, id, fileFlags, (uint)ino, proto, target),
                LibC.AF_PACKET => DumpPacket(local, id, fileFlags, (uint)ino, type, target),
                _ => throw new CrispException($"{target} is {FamilyName(family)} socket: not supported yet"),
            };
        }
        finally { LibC.close(local); }
    }

    // ---- unix ---------------------------------------------------------------------------------

    private FileEntry DumpUnix(int pid, int fd, int local, uint id, int fileFlags, uint ino, int type, string target)
    {
        _unixDiag ??= SockDiag.UnixSockets();
        if (!_unixDiag.TryGetValue(ino, out var d))
            throw new CrispException($"{target}: sock_diag does not list this unix socket (is it in another network namespace?): not supported yet");
        if (type is not (LibC.SOCK_STREAM or LibC.SOCK_DGRAM or LibC.SOCK_SEQPACKET))
            throw new CrispException($"{target} is a unix socket of type {type}: not supported yet");
        var e = new UnixSkEntry
        {
            Id = id, Ino = ino, Type = (uint)type, State = (uint)d.State, Flags = (uint)fileFlags, Uflags = 0,
            Backlog = d.State == LibC.TCP_LISTEN ? d.SendQueueOrBacklog : 0, Peer = d.Peer,
            Fown = NoOwner(), Opts = SocketOptions.Dump(local, target),
            Name = Google.Protobuf.ByteString.Empty, Shutdown = (SkShutdown)(d.Shutdown & 3),
        };
        if (d.Name.Length > 0) NameOf(pid, d, e);
        if (d.State == LibC.TCP_LISTEN && d.Icons.Contains(0u))
            throw new CrispException($"{target} is a listening unix socket with a connection that was closed before it was accepted: not supported yet");
        if (type == LibC.SOCK_DGRAM || d.State == LibC.TCP_ESTABLISHED)
            PeekQueue(local, id, type, (d.Shutdown & 1) != 0, pid, target);
        _unix[ino] = (e, pid, fd);
        return new FileEntry { Type = FdTypes.Unixsk, Id = id, Usk = e };
    }

    /// <summary>The socket's name as restore must bind it: absolute, or relative to a directory found now.</summary>
    private static void NameOf(int pid, SockDiag.UnixSocket d, UnixSkEntry e)
    {
        byte[] name = d.Name;
        if (name[0] == 0)
        {
            e.Name = Google.Protobuf.ByteString.CopyFrom(name);   // abstract: the bytes are the name
            return;
        }
        int len = Array.IndexOf(name, (byte)0);
        string path = System.Text.Encoding.UTF8.GetString(name, 0, len < 0 ? name.Length : len);
        e.Name = Google.Protobuf.ByteString.CopyFromUtf8(path);
        string full = path;
        if (!path.StartsWith('/'))
        {
            string cwd = ReadLink($"/proc/{pid}/cwd");
            e.NameDir = cwd;
            full = Path.Combine(cwd, path);
        }
        LibC.stat_t st;
        if (LibC.lstat(full, &st) != 0 || (st.st_mode & LibC.S_IFMT) != LibC.S_IFSOCK || (d.VfsIno != 0 && st.st_ino != d.VfsIno))
        {
            // Only a bound socket that was itself unlinked is "deleted"; an accepted
            // connection reports its listener's name, which is not its own file.
            if (d.VfsIno != 0) e.Deleted = true;
            return;
        }
        e.FilePerms = new FilePermsEntry { Mode = st.st_mode, Uid = st.st_uid, Gid = st.st_gid };
    }

    private static string ReadLink(string path) =>
        new FileInfo(path).LinkTarget ?? throw new CrispException($"{path}: not a link");

    private void PeekQueue(int local, uint id, int type, bool readShutdown, int owner, string target)
    {
        int oldOff = LibC.GetSockOptInt(local, LibC.SOL_SOCKET, LibC.SO_PEEK_OFF, target);
        LibC.SetSockOptInt(local, LibC.SOL_SOCKET, LibC.SO_PEEK_OFF, 0, target);
        try
        {
            var buf = new byte[256 * 1024];
            byte* control = stackalloc byte[ControlSize];
            int offset = 0;
            while (true)
            {
                nint n;
                LibC.msghdr msg;
                fixed (byte* b = buf)
                {
                    var iov = new LibC.iovec((nint)b, (nuint)buf.Length);
                    msg = new LibC.msghdr { msg_iov = &iov, msg_iovlen = 1, msg_control = control, msg_controllen = ControlSize };
                    int flags = LibC.MSG_PEEK | LibC.MSG_DONTWAIT | LibC.MSG_CMSG_CLOEXEC | (type == LibC.SOCK_STREAM ? 0 : LibC.MSG_TRUNC);
                    n = LibC.recvmsg(local, &msg, flags);
                }
                if (n < 0)
                {
                    if (Errno.Last == Errno.EAGAIN) break;
                    throw Errno.Failure("recvmsg(MSG_PEEK)", target);
                }
                int[] passed = PassedFds(control, &msg, target);
                if (n > buf.Length)
                {
                    // A datagram larger than the buffer: look at it again, whole.
                    foreach (int fd in passed) LibC.close(fd);
                    buf = new byte[n];
                    LibC.SetSockOptInt(local, LibC.SOL_SOCKET, LibC.SO_PEEK_OFF, offset, target);
                    continue;
                }
                if (n == 0 && passed.Length == 0 && (type == LibC.SOCK_STREAM || readShutdown)) break;   // end of file, not a packet
                var entry = new SkPacketEntry { IdFor = id, Length = (uint)n };
                if (passed.Length > 0)
                {
                    // The files are dumped once the holder's own files are (FileTable.InFlight.cs):
                    // they may be among them, and their ids are known only then.
                    var scm = new ScmEntry { Type = LibC.SCM_RIGHTS };
                    entry.Scm.Add(scm);
                    _inFlight.Add(new FilesInFlight(scm, passed, owner, target));
                }
                _packets.Add(new SkPacket(entry, buf.AsSpan(0, (int)n).ToArray()));
                offset += (int)n;
            }
        }
        finally
        {
            LibC.SetSockOptInt(local, LibC.SOL_SOCKET, LibC.SO_PEEK_OFF, oldOff, target);
        }
    }

    /// <summary>
    /// The descriptors a peeked message carries (SCM_RIGHTS): peeking installed them in crisp, so
    /// they are crisp's own now, the very files in flight. Other ancillary data (credentials the
    /// receiver asked for with SO_PASSCRED) is the kernel's to make again on the next receive.
    /// </summary>
    private static int[] PassedFds(byte* control, LibC.msghdr* msg, string target)
    {
        var fds = new List<int>();
        nuint off = 0;
        while (off + 16 <= msg->msg_controllen)
        {
            var c = (LibC.cmsghdr*)(control + off);
            if (c->cmsg_len < 16) break;
            if (c->cmsg_level == LibC.SOL_SOCKET && c->cmsg_type == LibC.SCM_RIGHTS)
            {
                int count = (int)(c->cmsg_len - 16) / 4;
                for (int i = 0; i < count; i++) fds.Add(((int*)((byte*)c + 16))[i]);
            }
            off += (c->cmsg_len + 7) & ~(nuint)7;
        }
        if ((msg->msg_flags & LibC.MSG_CTRUNC) != 0)
        {
            foreach (int fd in fds) LibC.close(fd);
            throw new CrispException($"{target}: a queued message carries more ancillary data than crisp reads ({ControlSize} bytes): not supported yet");
        }
        return [.. fds];
    }

    /// <summary>Room for SCM_MAX_FD (253) descriptors and a credentials message beside them.</summary>
    private const int ControlSize = 16 + 4 * 253 + 4 + 64;

    /// <summary>Checks and completes peers once every socket of the tree is known; returns extra (external) entries.</summary>
    public IReadOnlyList<FileEntry> Finish(Func<uint> nextId)
    {
        if (_unix.Count == 0) return _externals;
        var icons = new Dictionary<uint, uint>();   // connecting socket's ino → listener's ino
        foreach (var ino in _unix.Keys)
            if (_unixDiag!.TryGetValue(ino, out var d))
                foreach (var c in d.Icons) icons[c] = ino;
        var externalIds = new Dictionary<uint, uint>();
        foreach (var (ino, (e, pid, fd)) in _unix)
        {
            string what = $"process {pid}: fd {fd} (unix {TypeName((int)e.Type)} socket socket:[{ino}])";
            if (e.Peer == 0 && e.State == LibC.TCP_ESTABLISHED && e.Type != LibC.SOCK_DGRAM && icons.TryGetValue(ino, out var listener))
            {
                // A connection not accepted yet: restore connects it again. What it wrote sits in a
                // socket no process has a descriptor of, so it cannot be read: refuse, as CRIU does.
                if (_unixDiag!.TryGetValue(ino, out var cd) && cd.SendQueueOrBacklog != 0)
                    throw new CrispException($"{what} is a connection not accepted yet by socket:[{listener}] with data the listener has not read: not supported yet");
                e.Peer = listener;
                continue;
            }
            if (e.Peer == 0) continue;
            if (_unix.TryGetValue(e.Peer, out var peer))
            {
                if (peer.Entry.Peer != ino && peer.Entry.Name.IsEmpty)
                    throw new CrispException($"{what} is connected to socket:[{e.Peer}], which is connected elsewhere and has no name: crisp cannot connect it again");
                continue;
            }
            var pd = _unixDiag!.GetValueOrDefault(e.Peer);
            string peerName = pd == null || pd.Name.Length == 0 ? "no name" :
                pd.Name[0] == 0 ? "abstract name @" + System.Text.Encoding.UTF8.GetString(pd.Name, 1, pd.Name.Length - 1).TrimEnd('\0')
                                : "name " + System.Text.Encoding.UTF8.GetString(pd.Name).TrimEnd('\0');
            if (!extUnixSk)
                throw new CrispException($"{what} is connected to socket:[{e.Peer}] ({peerName}) outside the dumped tree (CRIU's --ext-unix-sk allows a datagram one)");
            if (e.Type != LibC.SOCK_DGRAM || pd == null || pd.Name.Length == 0)
                throw new CrispException($"{what} is connected to socket:[{e.Peer}] ({peerName}) outside the dumped tree: --ext-unix-sk only covers datagram sockets sending to a named socket");
            if (!externalIds.ContainsKey(e.Peer))
            {
                uint xid = nextId();
                externalIds[e.Peer] = xid;
                var name = pd.Name[0] == 0 ? pd.Name : pd.Name.TakeWhile(b => b != 0).ToArray();
                _externals.Add(new FileEntry
                {
                    Type = FdTypes.Unixsk, Id = xid,
                    Usk = new UnixSkEntry
                    {
                        Id = xid, Ino = e.Peer, Type = LibC.SOCK_DGRAM, State = LibC.TCP_LISTEN, Flags = 0, Uflags = USK_EXTERN,
                        Backlog = 0, Peer = 0, Fown = NoOwner(), Opts = new SkOptsEntry { SoSndbuf = 0, SoRcvbuf = 0, SoSndTmoSec = 0, SoSndTmoUsec = 0, SoRcvTmoSec = 0, SoRcvTmoUsec = 0 },
                        Name = Google.Protobuf.ByteString.CopyFrom(name),
                    },
                });
            }
        }
        return _externals;
    }

    // ---- inet ---------------------------------------------------------------------------------

    private FileEntry DumpInet(int local, uint id, int fileFlags, uint ino, int family, int type, int proto, string target)
    {
        string kind = $"{(family == LibC.AF_INET ? "IPv4" : "IPv6")} {ProtoName(type, proto)}";
        // CRIU's kinds: TCP, UDP, UDP-Lite, ping (ICMP datagram) sockets, and raw sockets of any protocol.
        bool known = type switch
        {
            LibC.SOCK_STREAM => proto == LibC.IPPROTO_TCP,
            LibC.SOCK_DGRAM => proto is LibC.IPPROTO_UDP or IPPROTO_UDPLITE || proto == (family == LibC.AF_INET ? IPPROTO_ICMP : IPPROTO_ICMPV6),
            LibC.SOCK_RAW => true,
            _ => false,
        };
        if (!known) throw new CrispException($"{target} is an {kind} socket: not supported yet");
        var e = new InetSkEntry
        {
            Id = id, Ino = ino, Family = (uint)family, Type = (uint)type, Proto = (uint)proto, State = LibC.TCP_CLOSE, DstPort = 0,
            Flags = (uint)fileFlags, Backlog = 0, Fown = NoOwner(), Opts = SocketOptions.Dump(local, target),
            IpOpts = SocketOptions.DumpIp(local, family, type, proto, target),
        };
        var (srcPort, srcAddr) = Address(local, family, peer: false, target);
        e.SrcPort = srcPort;
        e.SrcAddr.AddRange(srcAddr);
        if (family == LibC.AF_INET6)
            e.V6Only = LibC.GetSockOptInt(local, LibC.IPPROTO_IPV6, LibC.IPV6_V6ONLY, target) != 0;
        if (type == LibC.SOCK_STREAM)
        {
            e.TcpOpts = SocketOptions.DumpTcp(local, target);
            int state = TcpState(local, target);
            if (state == LibC.TCP_LISTEN)
            {
                e.State = LibC.TCP_LISTEN;
                var diag = SockDiag.FindInet(family, proto, ino);
                e.Backlog = diag?.SendQueueOrBacklog ?? 128;
                if (diag != null && diag.RecvQueue != 0)
                {
                    // Connections the kernel completed that nobody accepted yet: no process holds them.
                    if (!skipInFlight)
                        throw new CrispException($"{target} is a listening {kind} socket (port {srcPort}) with {diag.RecvQueue} connection(s) not accepted yet " +
                                                 "(CRIU's --skip-in-flight leaves them out)");
                    Log.I($"{target}: {diag.RecvQueue} connection(s) not accepted yet are left out (--skip-in-flight)");
                }
            }
            else if (state == LibC.TCP_CLOSE && Address(local, family, peer: true, target).Port == 0)
            {
                // Never connected, or disconnected (connect(AF_UNSPEC)).
                if (ClosedShutdown(local, target) is var how && how != SkShutdown.None) e.Shutdown = how;
            }
            else
            {
                // A connection, also one that ended (reset, or closed both ways: state CLOSE) but whose
                // socket is still open, and one whose handshake is not done (SYN_SENT): CRIU's cases.
                var (dstPort, dstAddr) = Address(local, family, peer: true, target);
                string conn = $"{kind} connection in state {TcpStates.Name(state)} ({NetworkLock.Format(family, srcAddr)}:{srcPort} → " +
                              $"{(dstAddr.Length == 0 ? "?" : NetworkLock.Format(family, dstAddr))}:{dstPort})";
                if (tcpClose)
                {
                    // --tcp-close: recorded as it is (CRIU's image, inventory's tcp_close set) with no
                    // stream; restore makes a fresh socket, neither bound nor connected, shut down.
                    e.State = (uint)state;
                    e.DstPort = dstPort;
                    e.DstAddr.AddRange(dstAddr);
                    Log.I($"{target}: {conn} will be restored closed (--tcp-close)");
                }
                else if (tcp == null)
                    throw new CrispException($"{target} is an {conn}: dump it with --tcp-established (or --tcp-close to restore it closed)");
                else
                {
                    e.State = (uint)state;
                    e.DstPort = dstPort;
                    e.DstAddr.AddRange(dstAddr);
                    var diag = SockDiag.FindInet(family, proto, ino);
                    if (diag != null && diag.Shutdown != 0) e.Shutdown = (SkShutdown)(diag.Shutdown & 3);
                    tcp.Dump(local, e, state, $"{target} ({conn})");
                }
            }
        }
        else
        {
            var (dstPort, dstAddr) = Address(local, family, peer: true, target);
            e.DstPort = dstPort;
            e.DstAddr.AddRange(dstAddr);
            // inet_diag knows UDP and UDP-Lite sockets; raw ones only with raw_diag, ping ones not at all
            // (and CRIU restores the shutdown of neither).
            var diag = type == LibC.SOCK_DGRAM && proto is LibC.IPPROTO_UDP or IPPROTO_UDPLITE ? SockDiag.FindInet(family, proto, ino) : null;
            if (diag != null && diag.Shutdown != 0) e.Shutdown = (SkShutdown)(diag.Shutdown & 3);
            if (diag != null && diag.RecvQueue != 0)
                Log.I($"{target}: {diag.RecvQueue} bytes queued on an {kind} socket are dropped, as CRIU does");
        }
        // CRIU reads an address of the family's length even where there is none (unbound, unconnected): zeros.
        if (e.DstAddr.Count == 0) e.DstAddr.AddRange(new uint[family == LibC.AF_INET ? 1 : 4]);
        return new FileEntry { Type = FdTypes.Inetsk, Id = id, Isk = e };
    }

    private static int TcpState(int fd, string target)
    {
        byte* info = stackalloc byte[256];
        uint len = 256;
        Errno.Check(LibC.getsockopt(fd, LibC.IPPROTO_TCP, LibC.TCP_INFO, info, &len), "getsockopt(TCP_INFO)", target);
        return info[0];
    }

    /// <summary>Local or peer port (host order) and address (CRIU's u32 words, network byte order in memory); (0, []) when not connected.</summary>
    private const int SO_PEERNAME = 28;
    private const short POLLRDHUP = 0x2000;

    /// <summary>
    /// The socket's name, or its peer's: through SO_PEERNAME, which (unlike getpeername) tells it in
    /// the states CLOSE and SYN_SENT too, as long as the socket has one (CRIU reads it so).
    /// </summary>
    private static (uint Port, uint[] Addr) Address(int fd, int family, bool peer, string target)
    {
        byte* sa = stackalloc byte[128];
        uint len = peer ? (family == LibC.AF_INET ? 16u : 28u) : 128;   // SO_PEERNAME wants no more room than the name takes
        int rc = peer ? LibC.getsockopt(fd, LibC.SOL_SOCKET, SO_PEERNAME, sa, &len) : LibC.getsockname(fd, sa, &len);
        if (rc != 0)
        {
            if (peer && Errno.Last == Errno.ENOTCONN) return (0, []);
            throw Errno.Failure(peer ? "getsockopt(SO_PEERNAME)" : "getsockname", target);
        }
        var s = new ReadOnlySpan<byte>(sa, (int)len);
        uint port = BinaryPrimitives.ReadUInt16BigEndian(s[2..]);
        if (family == LibC.AF_INET) return (port, [BinaryPrimitives.ReadUInt32LittleEndian(s[4..])]);
        var a = new uint[4];
        for (int i = 0; i < 4; i++) a[i] = BinaryPrimitives.ReadUInt32LittleEndian(s[(8 + 4 * i)..]);
        return (port, a);
    }

    /// <summary>
    /// An unconnected TCP socket's shutdown, which no call reports: poll does (CRIU's way). A closed
    /// socket always polls HUP; RDHUP means its reading side was shut down.
    /// </summary>
    private static SkShutdown ClosedShutdown(int fd, string target)
    {
        var p = new LibC.PollFd { fd = fd, events = LibC.POLLHUP | POLLRDHUP };
        if (Errno.Check(LibC.poll(&p, 1, 0), "poll", target) != 1 || (p.revents & LibC.POLLHUP) == 0) return SkShutdown.None;
        return (p.revents & POLLRDHUP) != 0 ? SkShutdown.Read : SkShutdown.None;
    }

    private static FownEntry NoOwner() => new() { Uid = 0, Euid = 0, Signum = 0, PidType = 0, Pid = 0 };

    public static string TypeName(int type) => type switch
    {
        LibC.SOCK_STREAM => "stream", LibC.SOCK_DGRAM => "datagram", LibC.SOCK_SEQPACKET => "seqpacket",
        LibC.SOCK_RAW => "raw", _ => $"type {type}",
    };

    public const int IPPROTO_ICMP = 1, IPPROTO_ICMPV6 = 58, IPPROTO_UDPLITE = 136;

    public static string ProtoName(int type, int proto) => (type, proto) switch
    {
        (LibC.SOCK_STREAM, LibC.IPPROTO_TCP) => "TCP",
        (LibC.SOCK_DGRAM, LibC.IPPROTO_UDP) => "UDP",
        (LibC.SOCK_DGRAM, IPPROTO_UDPLITE) => "UDP-Lite",
        (LibC.SOCK_DGRAM, IPPROTO_ICMP) => "ICMP (ping)",
        (LibC.SOCK_DGRAM, IPPROTO_ICMPV6) => "ICMPv6 (ping)",
        (LibC.SOCK_RAW, _) => $"raw (protocol {proto})",
        _ => $"{TypeName(type)} (protocol {proto})",
    };

    private static string FamilyName(int family) => family switch
    {
        LibC.AF_NETLINK => "a netlink",
        40 => "an AF_VSOCK",
        44 => "an AF_XDP",
        _ => $"an address family {family}",
    };
}
