using System.Runtime.InteropServices;

namespace Crisp.Native;

/// <summary>The BSD socket calls, with the kernel's constant names (dumping and recreating sockets).</summary>
public static unsafe partial class LibC
{
    public const int AF_UNSPEC = 0, AF_UNIX = 1, AF_INET = 2, AF_INET6 = 10, AF_NETLINK = 16, AF_PACKET = 17;
    public const int SOCK_STREAM = 1, SOCK_DGRAM = 2, SOCK_RAW = 3, SOCK_SEQPACKET = 5,
        SOCK_NONBLOCK = 0x800, SOCK_CLOEXEC = 0x80000;
    public const int IPPROTO_IP = 0, IPPROTO_TCP = 6, IPPROTO_UDP = 17, IPPROTO_IPV6 = 41;
    public const int MSG_PEEK = 2, MSG_TRUNC = 0x20, MSG_DONTWAIT = 0x40, MSG_CTRUNC = 8;
    public const int SHUT_RD = 0, SHUT_WR = 1, SHUT_RDWR = 2;
    public const int SCM_CREDENTIALS = 2;

    // SOL_SOCKET options
    public const int SO_REUSEADDR = 2, SO_TYPE = 3, SO_DONTROUTE = 5, SO_BROADCAST = 6, SO_SNDBUF = 7,
        SO_RCVBUF = 8, SO_KEEPALIVE = 9, SO_OOBINLINE = 10, SO_NO_CHECK = 11, SO_PRIORITY = 12, SO_LINGER = 13,
        SO_REUSEPORT = 15, SO_PASSCRED = 16, SO_RCVLOWAT = 18, SO_RCVTIMEO_OLD = 20, SO_SNDTIMEO_OLD = 21,
        SO_BINDTODEVICE = 25, SO_ACCEPTCONN = 30, SO_SNDBUFFORCE = 32, SO_RCVBUFFORCE = 33, SO_PASSSEC = 34,
        SO_MARK = 36, SO_PROTOCOL = 38, SO_DOMAIN = 39, SO_PEEK_OFF = 42, SO_BUF_LOCK = 72;

    // IPPROTO_TCP, IPPROTO_IP, IPPROTO_IPV6 options
    public const int TCP_NODELAY = 1, TCP_CORK = 3, TCP_KEEPIDLE = 4, TCP_KEEPINTVL = 5, TCP_KEEPCNT = 6, TCP_INFO = 11;
    public const int IP_TOS = 1, IP_TTL = 2, IP_HDRINCL = 3, IP_PKTINFO = 8, IP_FREEBIND = 15;
    public const int IPPROTO_RAW = 255;

    // TCP repair (linux/tcp.h): read and rebuild a connection without talking to its peer.
    public const int TCP_MAXSEG = 2, TCP_REPAIR = 19, TCP_REPAIR_QUEUE = 20, TCP_QUEUE_SEQ = 21, TCP_REPAIR_OPTIONS = 22,
        TCP_TIMESTAMP = 24, TCP_REPAIR_WINDOW = 29;
    public const int TCP_NO_QUEUE = 0, TCP_RECV_QUEUE = 1, TCP_SEND_QUEUE = 2;
    public const int TCPI_OPT_TIMESTAMPS = 1, TCPI_OPT_SACK = 2, TCPI_OPT_WSCALE = 4;
    public const int TCPOPT_MAXSEG = 2, TCPOPT_WINDOW = 3, TCPOPT_SACK_PERM = 4, TCPOPT_TIMESTAMP = 8;
    // Queue sizes (linux/sockios.h): bytes to read, bytes not yet acknowledged, bytes not yet sent.
    public const ulong SIOCINQ = 0x541B, SIOCOUTQ = 0x5411, SIOCOUTQNSD = 0x894B;

    /// <summary>struct tcp_repair_window.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct tcp_repair_window
    {
        public uint snd_wl1, snd_wnd, max_window, rcv_wnd, rcv_wup;
    }

    /// <summary>struct tcp_repair_opt.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct tcp_repair_opt
    {
        public uint opt_code, opt_val;
    }
    public const int IPV6_V6ONLY = 26, IPV6_FREEBIND = 78, IPV6_HDRINCL = 36;

    // TCP states (include/net/tcp_states.h), also used by AF_UNIX sockets
    public const int TCP_ESTABLISHED = 1, TCP_SYN_SENT = 2, TCP_SYN_RECV = 3, TCP_FIN_WAIT1 = 4, TCP_FIN_WAIT2 = 5,
        TCP_TIME_WAIT = 6, TCP_CLOSE = 7, TCP_CLOSE_WAIT = 8, TCP_LAST_ACK = 9, TCP_LISTEN = 10, TCP_CLOSING = 11;

    [LibraryImport(Lib, SetLastError = true)] public static partial int socket(int domain, int type, int protocol);
    [LibraryImport(Lib, SetLastError = true)] public static partial int socketpair(int domain, int type, int protocol, int* sv);
    [LibraryImport(Lib, SetLastError = true)] public static partial int bind(int fd, byte* addr, uint len);
    [LibraryImport(Lib, SetLastError = true)] public static partial int listen(int fd, int backlog);
    [LibraryImport(Lib, SetLastError = true)] public static partial int connect(int fd, byte* addr, uint len);
    [LibraryImport(Lib, SetLastError = true)] public static partial int shutdown(int fd, int how);
    [LibraryImport(Lib, SetLastError = true)] public static partial int getsockname(int fd, byte* addr, uint* len);
    [LibraryImport(Lib, SetLastError = true)] public static partial int getpeername(int fd, byte* addr, uint* len);
    [LibraryImport(Lib, SetLastError = true)] public static partial int getsockopt(int fd, int level, int name, void* val, uint* len);
    [LibraryImport(Lib, SetLastError = true)] public static partial int setsockopt(int fd, int level, int name, void* val, uint len);
    [LibraryImport(Lib, SetLastError = true)] public static partial nint sendto(int fd, byte* buf, nuint len, int flags, byte* addr, uint addrlen);
    [LibraryImport(Lib, SetLastError = true)] public static partial nint recvfrom(int fd, byte* buf, nuint len, int flags, byte* addr, uint* addrlen);
    [LibraryImport(Lib, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)] public static partial int lchown(string path, uint uid, uint gid);
    [LibraryImport(Lib, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)] public static partial int chmod(string path, uint mode);
    [LibraryImport(Lib, EntryPoint = "lstat", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int lstat(string path, stat_t* buf);

    /// <summary>getsockopt of an int-sized option.</summary>
    public static int GetSockOptInt(int fd, int level, int name, string target)
    {
        int v = 0;
        uint len = sizeof(int);
        Errno.Check(getsockopt(fd, level, name, &v, &len), $"getsockopt({OptName(level, name)})", target);
        return v;
    }

    /// <summary>setsockopt of an int-sized option.</summary>
    public static void SetSockOptInt(int fd, int level, int name, int value, string target)
    {
        Errno.Check(setsockopt(fd, level, name, &value, sizeof(int)), $"setsockopt({OptName(level, name)}, {value})", target);
    }

    public static string OptName(int level, int name) => (level, name) switch
    {
        (SOL_SOCKET, SO_REUSEADDR) => "SO_REUSEADDR", (SOL_SOCKET, SO_TYPE) => "SO_TYPE",
        (SOL_SOCKET, SO_DONTROUTE) => "SO_DONTROUTE", (SOL_SOCKET, SO_BROADCAST) => "SO_BROADCAST",
        (SOL_SOCKET, SO_SNDBUF) => "SO_SNDBUF", (SOL_SOCKET, SO_RCVBUF) => "SO_RCVBUF",
        (SOL_SOCKET, SO_KEEPALIVE) => "SO_KEEPALIVE", (SOL_SOCKET, SO_OOBINLINE) => "SO_OOBINLINE",
        (SOL_SOCKET, SO_NO_CHECK) => "SO_NO_CHECK", (SOL_SOCKET, SO_PRIORITY) => "SO_PRIORITY",
        (SOL_SOCKET, SO_LINGER) => "SO_LINGER", (SOL_SOCKET, SO_REUSEPORT) => "SO_REUSEPORT",
        (SOL_SOCKET, SO_PASSCRED) => "SO_PASSCRED", (SOL_SOCKET, SO_RCVLOWAT) => "SO_RCVLOWAT",
        (SOL_SOCKET, SO_RCVTIMEO_OLD) => "SO_RCVTIMEO", (SOL_SOCKET, SO_SNDTIMEO_OLD) => "SO_SNDTIMEO",
        (SOL_SOCKET, SO_BINDTODEVICE) => "SO_BINDTODEVICE", (SOL_SOCKET, SO_ACCEPTCONN) => "SO_ACCEPTCONN",
        (SOL_SOCKET, SO_SNDBUFFORCE) => "SO_SNDBUFFORCE", (SOL_SOCKET, SO_RCVBUFFORCE) => "SO_RCVBUFFORCE",
        (SOL_SOCKET, SO_PASSSEC) => "SO_PASSSEC", (SOL_SOCKET, SO_MARK) => "SO_MARK",
        (SOL_SOCKET, SO_PROTOCOL) => "SO_PROTOCOL", (SOL_SOCKET, SO_DOMAIN) => "SO_DOMAIN",
        (SOL_SOCKET, SO_PEEK_OFF) => "SO_PEEK_OFF", (SOL_SOCKET, SO_BUF_LOCK) => "SO_BUF_LOCK",
        (IPPROTO_TCP, TCP_NODELAY) => "TCP_NODELAY", (IPPROTO_TCP, TCP_CORK) => "TCP_CORK",
        (IPPROTO_TCP, TCP_KEEPIDLE) => "TCP_KEEPIDLE", (IPPROTO_TCP, TCP_KEEPINTVL) => "TCP_KEEPINTVL",
        (IPPROTO_TCP, TCP_KEEPCNT) => "TCP_KEEPCNT", (IPPROTO_TCP, TCP_INFO) => "TCP_INFO",
        (IPPROTO_IP, IP_TOS) => "IP_TOS", (IPPROTO_IP, IP_TTL) => "IP_TTL", (IPPROTO_IP, IP_PKTINFO) => "IP_PKTINFO",
        (IPPROTO_IP, IP_FREEBIND) => "IP_FREEBIND", (IPPROTO_IPV6, IPV6_V6ONLY) => "IPV6_V6ONLY",
        (IPPROTO_IPV6, IPV6_FREEBIND) => "IPV6_FREEBIND",
        (IPPROTO_TCP, TCP_MAXSEG) => "TCP_MAXSEG", (IPPROTO_TCP, TCP_REPAIR) => "TCP_REPAIR",
        (IPPROTO_TCP, TCP_REPAIR_QUEUE) => "TCP_REPAIR_QUEUE", (IPPROTO_TCP, TCP_QUEUE_SEQ) => "TCP_QUEUE_SEQ",
        (IPPROTO_TCP, TCP_REPAIR_OPTIONS) => "TCP_REPAIR_OPTIONS", (IPPROTO_TCP, TCP_TIMESTAMP) => "TCP_TIMESTAMP",
        (IPPROTO_TCP, TCP_REPAIR_WINDOW) => "TCP_REPAIR_WINDOW",
        _ => $"level {level} option {name}",
    };
}
