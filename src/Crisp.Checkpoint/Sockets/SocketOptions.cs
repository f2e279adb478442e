using Crisp.Images.Proto;
using Crisp.Native;

namespace Crisp.Checkpoint.Sockets;

/// <summary>
/// The socket options CRIU keeps for every socket (sk_opts_entry), the TCP ones (tcp_opts_entry)
/// and the IP ones (ip_opts_entry): read with getsockopt on crisp's copy of the socket at dump,
/// set on the new socket at restore. Buffer sizes read back doubled (the kernel's bookkeeping
/// overhead), so they are set with half the value, through SO_*BUFFORCE so that the rmem_max /
/// wmem_max sysctls do not cap them; SO_BUF_LOCK then puts back whether the program itself had
/// fixed them.
/// </summary>
internal static unsafe class SocketOptions
{
    public static SkOptsEntry Dump(int fd, string target)
    {
        var o = new SkOptsEntry
        {
            SoSndbuf = (uint)Int(fd, LibC.SO_SNDBUF, target),
            SoRcvbuf = (uint)Int(fd, LibC.SO_RCVBUF, target),
        };
        (o.SoSndTmoSec, o.SoSndTmoUsec) = Timeout(fd, LibC.SO_SNDTIMEO_OLD, target);
        (o.SoRcvTmoSec, o.SoRcvTmoUsec) = Timeout(fd, LibC.SO_RCVTIMEO_OLD, target);
        o.Reuseaddr = Int(fd, LibC.SO_REUSEADDR, target) != 0;
        o.SoReuseport = Int(fd, LibC.SO_REUSEPORT, target) != 0;
        o.SoPriority = (uint)Int(fd, LibC.SO_PRIORITY, target);
        o.SoRcvlowat = (uint)Int(fd, LibC.SO_RCVLOWAT, target);
        o.SoMark = (uint)Int(fd, LibC.SO_MARK, target);
        o.SoPasscred = Int(fd, LibC.SO_PASSCRED, target) != 0;
        o.SoPasssec = Int(fd, LibC.SO_PASSSEC, target) != 0;
        o.SoDontroute = Int(fd, LibC.SO_DONTROUTE, target) != 0;
        o.SoNoCheck = Int(fd, LibC.SO_NO_CHECK, target) != 0;
        o.SoBroadcast = Int(fd, LibC.SO_BROADCAST, target) != 0;
        o.SoKeepalive = Int(fd, LibC.SO_KEEPALIVE, target) != 0;
        o.SoOobinline = (uint)Int(fd, LibC.SO_OOBINLINE, target);
        o.SoBufLock = (uint)Int(fd, LibC.SO_BUF_LOCK, target);
        int* linger = stackalloc int[2];
        uint len = 8;
        Errno.Check(LibC.getsockopt(fd, LibC.SOL_SOCKET, LibC.SO_LINGER, linger, &len), "getsockopt(SO_LINGER)", target);
        if (linger[0] != 0) o.SoLinger = (uint)linger[1];
        byte* dev = stackalloc byte[32];
        len = 32;
        Errno.Check(LibC.getsockopt(fd, LibC.SOL_SOCKET, LibC.SO_BINDTODEVICE, dev, &len), "getsockopt(SO_BINDTODEVICE)", target);
        if (len > 0 && dev[0] != 0) o.SoBoundDev = new string((sbyte*)dev);
        DumpFilter(fd, o, target);
        return o;
    }

    private const int SO_GET_FILTER = 26, SO_ATTACH_FILTER = 26;

    /// <summary>
    /// The classic BPF filter attached with SO_ATTACH_FILTER, one u64 per instruction
    /// (struct sock_filter as it lies in memory), as CRIU keeps it. SO_GET_FILTER counts in
    /// instructions, not bytes: a first call with length 0 says how many there are.
    /// </summary>
    private static void DumpFilter(int fd, SkOptsEntry o, string target)
    {
        uint count = 0;
        Errno.Check(LibC.getsockopt(fd, LibC.SOL_SOCKET, SO_GET_FILTER, null, &count), "getsockopt(SO_GET_FILTER)", target);
        if (count == 0) return;
        var insns = new ulong[count];
        fixed (ulong* p = insns)
            Errno.Check(LibC.getsockopt(fd, LibC.SOL_SOCKET, SO_GET_FILTER, p, &count), "getsockopt(SO_GET_FILTER)", target);
        o.SoFilter.AddRange(insns.Take((int)count));
    }

    /// <summary>Attaches the dumped filter; last, so that it cannot drop the queued data put back before it.</summary>
    public static void RestoreFilter(int fd, SkOptsEntry o, string target)
    {
        if (o.SoFilter.Count == 0) return;
        var insns = o.SoFilter.ToArray();
        fixed (ulong* p = insns)
        {
            // struct sock_fprog { unsigned short len; struct sock_filter *filter; }
            ulong* prog = stackalloc ulong[2];
            prog[0] = (ulong)insns.Length;
            prog[1] = (ulong)p;
            Errno.Check(LibC.setsockopt(fd, LibC.SOL_SOCKET, SO_ATTACH_FILTER, prog, 16), $"setsockopt(SO_ATTACH_FILTER, {insns.Length} instructions)", target);
        }
    }

    /// <summary>Options that must be set before bind (address reuse, the device).</summary>
    public static void RestoreBeforeBind(int fd, SkOptsEntry o, string target)
    {
        if (o.Reuseaddr) SetInt(fd, LibC.SOL_SOCKET, LibC.SO_REUSEADDR, 1, target);
        if (o.SoReuseport) SetInt(fd, LibC.SOL_SOCKET, LibC.SO_REUSEPORT, 1, target);
        if (o.HasSoBoundDev && o.SoBoundDev.Length > 0)
        {
            var bytes = System.Text.Encoding.UTF8.GetBytes(o.SoBoundDev + "\0");
            fixed (byte* b = bytes)
                Errno.Check(LibC.setsockopt(fd, LibC.SOL_SOCKET, LibC.SO_BINDTODEVICE, b, (uint)bytes.Length),
                    $"setsockopt(SO_BINDTODEVICE, {o.SoBoundDev})", target);
        }
    }

    public static void Restore(int fd, SkOptsEntry o, string target)
    {
        SetInt(fd, LibC.SOL_SOCKET, LibC.SO_SNDBUFFORCE, (int)(o.SoSndbuf / 2), target);
        SetInt(fd, LibC.SOL_SOCKET, LibC.SO_RCVBUFFORCE, (int)(o.SoRcvbuf / 2), target);
        if (o.HasSoBufLock) SetInt(fd, LibC.SOL_SOCKET, LibC.SO_BUF_LOCK, (int)o.SoBufLock, target);
        SetTimeout(fd, LibC.SO_SNDTIMEO_OLD, o.SoSndTmoSec, o.SoSndTmoUsec, target);
        SetTimeout(fd, LibC.SO_RCVTIMEO_OLD, o.SoRcvTmoSec, o.SoRcvTmoUsec, target);
        if (o.HasSoPriority && o.SoPriority != 0) SetInt(fd, LibC.SOL_SOCKET, LibC.SO_PRIORITY, (int)o.SoPriority, target);
        if (o.HasSoRcvlowat && o.SoRcvlowat > 1) SetInt(fd, LibC.SOL_SOCKET, LibC.SO_RCVLOWAT, (int)o.SoRcvlowat, target);
        if (o.HasSoMark && o.SoMark != 0) SetInt(fd, LibC.SOL_SOCKET, LibC.SO_MARK, (int)o.SoMark, target);
        if (o.SoPasscred) SetInt(fd, LibC.SOL_SOCKET, LibC.SO_PASSCRED, 1, target);
        if (o.SoPasssec) SetInt(fd, LibC.SOL_SOCKET, LibC.SO_PASSSEC, 1, target);
        if (o.SoDontroute) SetInt(fd, LibC.SOL_SOCKET, LibC.SO_DONTROUTE, 1, target);
        if (o.SoNoCheck) SetInt(fd, LibC.SOL_SOCKET, LibC.SO_NO_CHECK, 1, target);
        if (o.SoBroadcast) SetInt(fd, LibC.SOL_SOCKET, LibC.SO_BROADCAST, 1, target);
        if (o.SoKeepalive) SetInt(fd, LibC.SOL_SOCKET, LibC.SO_KEEPALIVE, 1, target);
        if (o.HasSoOobinline && o.SoOobinline != 0) SetInt(fd, LibC.SOL_SOCKET, LibC.SO_OOBINLINE, 1, target);
        if (o.HasSoLinger)
        {
            int* linger = stackalloc int[2];
            linger[0] = 1;
            linger[1] = (int)o.SoLinger;
            Errno.Check(LibC.setsockopt(fd, LibC.SOL_SOCKET, LibC.SO_LINGER, linger, 8), "setsockopt(SO_LINGER)", target);
        }
    }

    public static TcpOptsEntry DumpTcp(int fd, string target) => new()
    {
        Nodelay = Int(fd, LibC.TCP_NODELAY, target, LibC.IPPROTO_TCP) != 0,
        Cork = Int(fd, LibC.TCP_CORK, target, LibC.IPPROTO_TCP) != 0,
        Keepidle = (uint)Int(fd, LibC.TCP_KEEPIDLE, target, LibC.IPPROTO_TCP),
        Keepintvl = (uint)Int(fd, LibC.TCP_KEEPINTVL, target, LibC.IPPROTO_TCP),
        Keepcnt = (uint)Int(fd, LibC.TCP_KEEPCNT, target, LibC.IPPROTO_TCP),
    };

    public static void RestoreTcp(int fd, TcpOptsEntry t, string target)
    {
        if (t.Nodelay) SetInt(fd, LibC.IPPROTO_TCP, LibC.TCP_NODELAY, 1, target);
        if (t.Cork) SetInt(fd, LibC.IPPROTO_TCP, LibC.TCP_CORK, 1, target);
        if (t.HasKeepidle) SetInt(fd, LibC.IPPROTO_TCP, LibC.TCP_KEEPIDLE, (int)t.Keepidle, target);
        if (t.HasKeepintvl) SetInt(fd, LibC.IPPROTO_TCP, LibC.TCP_KEEPINTVL, (int)t.Keepintvl, target);
        if (t.HasKeepcnt) SetInt(fd, LibC.IPPROTO_TCP, LibC.TCP_KEEPCNT, (int)t.Keepcnt, target);
    }

    // Raw sockets (CRIU's ip_opts_raw_entry): struct icmp_filter is one u32, struct icmp6_filter eight.
    private const int SOL_RAW = 255, ICMP_FILTER = 1, SOL_ICMPV6 = 58, ICMPV6_FILTER = 1, IP_NODEFRAG = 22, IPV6_RECVPKTINFO = 49;

    public static IpOptsEntry DumpIp(int fd, int family, int type, int proto, string target)
    {
        var ip = family == LibC.AF_INET6
            ? new IpOptsEntry
            {
                Freebind = Int(fd, LibC.IPV6_FREEBIND, target, LibC.IPPROTO_IPV6) != 0,
                Pktinfo = Int(fd, IPV6_RECVPKTINFO, target, LibC.IPPROTO_IPV6) != 0,
            }
            : new IpOptsEntry
            {
                Freebind = Int(fd, LibC.IP_FREEBIND, target, LibC.IPPROTO_IP) != 0,
                Pktinfo = Int(fd, LibC.IP_PKTINFO, target, LibC.IPPROTO_IP) != 0,
                Tos = (uint)Int(fd, LibC.IP_TOS, target, LibC.IPPROTO_IP),
                Ttl = (uint)Int(fd, LibC.IP_TTL, target, LibC.IPPROTO_IP),
            };
        if (type == LibC.SOCK_RAW) ip.Raw = DumpRaw(fd, family, proto, target);
        return ip;
    }

    private static IpOptsRawEntry DumpRaw(int fd, int family, int proto, string target)
    {
        bool v6 = family == LibC.AF_INET6;
        var raw = new IpOptsRawEntry
        {
            Hdrincl = v6 ? Int(fd, LibC.IPV6_HDRINCL, target, LibC.IPPROTO_IPV6) != 0 : Int(fd, LibC.IP_HDRINCL, target, LibC.IPPROTO_IP) != 0,
        };
        if (!v6) raw.Nodefrag = Int(fd, IP_NODEFRAG, target, LibC.IPPROTO_IP) != 0;
        if (proto == (v6 ? SocketDump.IPPROTO_ICMPV6 : SocketDump.IPPROTO_ICMP))
        {
            uint* filter = stackalloc uint[8];
            uint len = v6 ? 32u : 4u;
            Errno.Check(LibC.getsockopt(fd, v6 ? SOL_ICMPV6 : SOL_RAW, v6 ? ICMPV6_FILTER : ICMP_FILTER, filter, &len),
                v6 ? "getsockopt(ICMPV6_FILTER)" : "getsockopt(ICMP_FILTER)", target);
            for (int i = 0; i < len / 4; i++) raw.IcmpvFilter.Add(filter[i]);
        }
        return raw;
    }

    /// <summary>IP options; freebind must come before bind, so this runs before it.</summary>
    public static void RestoreIp(int fd, int family, int type, int proto, IpOptsEntry ip, string target)
    {
        if (family == LibC.AF_INET6)
        {
            if (ip.Freebind) SetInt(fd, LibC.IPPROTO_IPV6, LibC.IPV6_FREEBIND, 1, target);
            if (ip.Pktinfo) SetInt(fd, LibC.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1, target);
        }
        else
        {
            if (ip.Freebind) SetInt(fd, LibC.IPPROTO_IP, LibC.IP_FREEBIND, 1, target);
            if (ip.Pktinfo) SetInt(fd, LibC.IPPROTO_IP, LibC.IP_PKTINFO, 1, target);
            if (ip.HasTos && ip.Tos != 0) SetInt(fd, LibC.IPPROTO_IP, LibC.IP_TOS, (int)ip.Tos, target);
            if (ip.HasTtl && ip.Ttl != 0 && ip.Ttl != DefaultTtl()) SetInt(fd, LibC.IPPROTO_IP, LibC.IP_TTL, (int)ip.Ttl, target);
        }
        if (ip.Raw is { } raw && type == LibC.SOCK_RAW) RestoreRaw(fd, family, proto, raw, target);
    }

    private static void RestoreRaw(int fd, int family, int proto, IpOptsRawEntry raw, string target)
    {
        bool v6 = family == LibC.AF_INET6;
        if (raw.Hdrincl)
        {
            if (v6) SetInt(fd, LibC.IPPROTO_IPV6, LibC.IPV6_HDRINCL, 1, target);
            else SetInt(fd, LibC.IPPROTO_IP, LibC.IP_HDRINCL, 1, target);
        }
        if (raw.Nodefrag && !v6) SetInt(fd, LibC.IPPROTO_IP, IP_NODEFRAG, 1, target);
        if (raw.IcmpvFilter.Count > 0 && proto == (v6 ? SocketDump.IPPROTO_ICMPV6 : SocketDump.IPPROTO_ICMP))
        {
            var filter = raw.IcmpvFilter.ToArray();
            fixed (uint* f = filter)
                Errno.Check(LibC.setsockopt(fd, v6 ? SOL_ICMPV6 : SOL_RAW, v6 ? ICMPV6_FILTER : ICMP_FILTER, f, (uint)(4 * filter.Length)),
                    v6 ? "setsockopt(ICMPV6_FILTER)" : "setsockopt(ICMP_FILTER)", target);
        }
    }

    private static uint DefaultTtl()
    {
        try { return uint.Parse(File.ReadAllText("/proc/sys/net/ipv4/ip_default_ttl").Trim()); }
        catch (IOException) { return 64; }
    }

    /// <summary>An int option; 0 where the socket's family does not have it (SO_PASSCRED on inet sockets is EOPNOTSUPP).</summary>
    private static int Int(int fd, int name, string target, int level = LibC.SOL_SOCKET)
    {
        int v = 0;
        uint len = sizeof(int);
        if (LibC.getsockopt(fd, level, name, &v, &len) == 0) return v;
        int err = Errno.Last;
        if (err is Errno.EOPNOTSUPP or ENOPROTOOPT) return 0;
        throw new SyscallException($"getsockopt({LibC.OptName(level, name)})", err, target);
    }

    private const int ENOPROTOOPT = 92;

    private static void SetInt(int fd, int level, int name, int value, string target) =>
        LibC.SetSockOptInt(fd, level, name, value, target);

    private static (ulong Sec, ulong Usec) Timeout(int fd, int name, string target)
    {
        long* tv = stackalloc long[2];
        uint len = 16;
        Errno.Check(LibC.getsockopt(fd, LibC.SOL_SOCKET, name, tv, &len), $"getsockopt({LibC.OptName(LibC.SOL_SOCKET, name)})", target);
        return ((ulong)tv[0], (ulong)tv[1]);
    }

    private static void SetTimeout(int fd, int name, ulong sec, ulong usec, string target)
    {
        if (sec == 0 && usec == 0) return;
        long* tv = stackalloc long[2];
        tv[0] = (long)sec;
        tv[1] = (long)usec;
        Errno.Check(LibC.setsockopt(fd, LibC.SOL_SOCKET, name, tv, 16), $"setsockopt({LibC.OptName(LibC.SOL_SOCKET, name)})", target);
    }
}
