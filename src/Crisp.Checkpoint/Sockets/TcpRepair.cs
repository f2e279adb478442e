using Crisp.Images;
using Crisp.Images.Proto;
using Crisp.Native;

namespace Crisp.Checkpoint.Sockets;

/// <summary>
/// Established TCP connections through the kernel's TCP repair mode (CRIU's --tcp-established,
/// the facts as CRIU's soccr has them). In repair mode a socket neither sends nor answers: its
/// sequence numbers, queues, negotiated options and window can be read, and set on a new socket
/// that is then "connected" without a handshake.
///
/// Sequence numbers (SIOCINQ/SIOCOUTQ/SIOCOUTQNSD tell the lengths):
///   receive: inq_seq = rcv_nxt (TCP_QUEUE_SEQ of TCP_RECV_QUEUE), inq_len = rcv_nxt - copied_seq;
///   send:    outq_seq = write_seq, outq_len = write_seq - snd_una, of which unsq_len were never sent.
/// Restore sets each queue's sequence to seq - len, then writes the bytes in: the receive queue
/// and the sent-but-unacknowledged part of the send queue in repair mode (the kernel just queues
/// them), the unsent part with repair off, as the program would have.
///
/// Dump: the connection is locked (NetworkLock) before repair goes on; the socket stays in repair
/// mode so that when the dumped tree is killed it closes without a FIN or RST. If the tree goes
/// on instead (--leave-running, a failed dump) repair goes off, SO_REUSEADDR is put back (leaving
/// repair resets it) and the lock is released.
///
/// Half-closed connections (FIN_WAIT*, CLOSE_WAIT, LAST_ACK, CLOSING) get a FIN put in one queue or
/// the other (below); a connection in SYN_SENT is connected again out of repair mode.
/// </summary>
internal sealed unsafe class TcpRepairDump(NetworkLock networkLock)
{
    private readonly List<(int Fd, bool ReuseAddr, string Target)> _repaired = [];
    private readonly Dictionary<uint, TcpStream> _streams = [];

    public NetworkLock Lock => networkLock;
    public IReadOnlyDictionary<uint, TcpStream> Streams => _streams;
    public bool Any => _repaired.Count > 0;

    /// <summary>Locks the connection, puts it in repair mode and reads it; the socket stays in repair.</summary>
    public void Dump(int local, InetSkEntry e, int state, string target)
    {
        if (!TcpStates.Repairable(state))
            throw new CrispException($"{target} is a TCP connection in state {TcpStates.Name(state)}: not supported yet");
        networkLock.Add(new TcpConnection((int)e.Family, e.SrcAddr.ToArray(), e.SrcPort, e.DstAddr.ToArray(), e.DstPort));
        int rfd = Errno.Check(LibC.dup(local), "dup", target);
        LibC.SetSockOptInt(rfd, LibC.IPPROTO_TCP, LibC.TCP_REPAIR, 1, target);
        _repaired.Add((rfd, e.Opts.Reuseaddr, target));
        _streams[e.Ino] = Read(rfd, target);
    }

    private static TcpStream Read(int fd, string target)
    {
        byte* info = stackalloc byte[256];
        uint ilen = 256;
        Errno.Check(LibC.getsockopt(fd, LibC.IPPROTO_TCP, LibC.TCP_INFO, info, &ilen), "getsockopt(TCP_INFO)", target);
        int state = info[0];
        if (!TcpStates.Repairable(state))
            throw new CrispException($"{target} went to state {TcpStates.Name(state)} while being dumped");
        uint options = info[5];
        uint sndWscale = (uint)(info[6] & 0xf), rcvWscale = (uint)(info[6] >> 4);
        var e = new TcpStreamEntry
        {
            OutqLen = (uint)Ioctl(fd, LibC.SIOCOUTQ, "SIOCOUTQ", target),
            UnsqLen = (uint)Ioctl(fd, LibC.SIOCOUTQNSD, "SIOCOUTQNSD", target),
            InqLen = (uint)Ioctl(fd, LibC.SIOCINQ, "SIOCINQ", target),
            MssClamp = (uint)LibC.GetSockOptInt(fd, LibC.IPPROTO_TCP, LibC.TCP_MAXSEG, target),
            OptMask = options, SndWscale = 0,
        };
        // A connection that was reset may still count unacknowledged bytes it will never send and
        // nobody can read: none are kept (soccr's rule), so a CLOSE connection is always restored as closed by FINs.
        if (state == LibC.TCP_CLOSE) e.OutqLen = e.UnsqLen = 0;
        // Our FIN sits in the send queue as one byte of sequence space, not data.
        if (TcpStates.Has(state, TcpStates.SndqFirstFin | TcpStates.SndqSecondFin))
        {
            if (e.OutqLen > 0) e.OutqLen--;
            if (e.UnsqLen > 0) e.UnsqLen--;
        }
        if ((options & LibC.TCPI_OPT_WSCALE) != 0)
        {
            e.SndWscale = sndWscale;
            e.RcvWscale = rcvWscale;
        }
        if ((options & LibC.TCPI_OPT_TIMESTAMPS) != 0)
            e.Timestamp = (uint)LibC.GetSockOptInt(fd, LibC.IPPROTO_TCP, LibC.TCP_TIMESTAMP, target);
        LibC.tcp_repair_window w;
        uint wlen = (uint)sizeof(LibC.tcp_repair_window);
        Errno.Check(LibC.getsockopt(fd, LibC.IPPROTO_TCP, LibC.TCP_REPAIR_WINDOW, &w, &wlen), "getsockopt(TCP_REPAIR_WINDOW)", target);
        e.SndWl1 = w.snd_wl1;
        e.SndWnd = w.snd_wnd;
        e.MaxWindow = w.max_window;
        e.RcvWnd = w.rcv_wnd;
        e.RcvWup = w.rcv_wup;
        // MSG_PEEK starts at the peek offset when one is set: read from the start, put it back after.
        int peekOff = LibC.GetSockOptInt(fd, LibC.SOL_SOCKET, LibC.SO_PEEK_OFF, target);
        if (peekOff >= 0) LibC.SetSockOptInt(fd, LibC.SOL_SOCKET, LibC.SO_PEEK_OFF, -1, target);
        try
        {
            var (inSeq, inq) = Queue(fd, LibC.TCP_RECV_QUEUE, e.InqLen, target);
            var (outSeq, outq) = Queue(fd, LibC.TCP_SEND_QUEUE, e.OutqLen, target);
            e.InqSeq = inSeq;
            e.OutqSeq = outSeq;
            return new TcpStream(e, inq, outq);
        }
        finally
        {
            if (peekOff >= 0) LibC.SetSockOptInt(fd, LibC.SOL_SOCKET, LibC.SO_PEEK_OFF, peekOff, target);
            LibC.SetSockOptInt(fd, LibC.IPPROTO_TCP, LibC.TCP_REPAIR_QUEUE, LibC.TCP_NO_QUEUE, target);
        }
    }

    /// <summary>The queue's sequence number and its bytes, peeked (one byte more is asked, to be sure there are no more).</summary>
    private static (uint Seq, byte[] Bytes) Queue(int fd, int queue, uint len, string target)
    {
        LibC.SetSockOptInt(fd, LibC.IPPROTO_TCP, LibC.TCP_REPAIR_QUEUE, queue, target);
        uint seq = (uint)LibC.GetSockOptInt(fd, LibC.IPPROTO_TCP, LibC.TCP_QUEUE_SEQ, target);
        string name = queue == LibC.TCP_RECV_QUEUE ? "receive" : "send";
        if (len == 0) return (seq, []);
        var buf = new byte[len + 1];
        nint n;
        fixed (byte* b = buf) n = LibC.recvfrom(fd, b, (nuint)buf.Length, LibC.MSG_PEEK | LibC.MSG_DONTWAIT, null, null);
        Errno.Check(n, $"recv(MSG_PEEK, {name} queue)", target);
        if (n != len) throw new CrispException($"{target}: the {name} queue holds {n} bytes, the kernel said {len}");
        return (seq, buf.AsSpan(0, (int)len).ToArray());
    }

    private static int Ioctl(int fd, ulong request, string name, string target)
    {
        int v = 0;
        Errno.Check(LibC.ioctl(fd, request, &v), $"ioctl({name})", target);
        return v;
    }

    /// <summary>
    /// The tree was killed: its sockets closed in repair mode, silently (our copies last, still in
    /// repair). The lock stays for the restore, unless <paramref name="release"/> (the connections'
    /// addresses left with the tree): it goes only now, after the last socket is gone.
    /// </summary>
    public void KeepLocked(bool release = false)
    {
        foreach (var (fd, _, _) in _repaired) LibC.close(fd);
        _repaired.Clear();
        if (release) networkLock.Release();
        networkLock.ForgetNamespace();   // a lock of the tree's own namespace dies with it
    }

    /// <summary>The tree goes on: every connection leaves repair mode and the lock goes.</summary>
    public void Resume()
    {
        foreach (var (fd, reuse, target) in _repaired)
        {
            int off = 0, r = reuse ? 1 : 0;
            if (LibC.setsockopt(fd, LibC.IPPROTO_TCP, LibC.TCP_REPAIR, &off, sizeof(int)) != 0)
                Log.E($"{target}: TCP_REPAIR off failed: {Errno.Name(Errno.Last)}");
            LibC.setsockopt(fd, LibC.SOL_SOCKET, LibC.SO_REUSEADDR, &r, sizeof(int));
            LibC.close(fd);
        }
        _repaired.Clear();
        networkLock.Release();
    }
}

/// <summary>Restore of one connection into a new socket (see <see cref="TcpRepairDump"/> for the order).</summary>
internal static unsafe class TcpRepairRestore
{
    /// <summary>
    /// Rebuilds the connection on <paramref name="fd"/> (a new TCP socket with its pre-bind options
    /// set); returns with the socket still in repair mode: the caller turns it off once the processes
    /// hold it, just before they run.
    /// </summary>
    public static void Restore(int fd, InetSkEntry e, TcpStream s, Func<uint, IList<uint>, byte[]> address, string target)
    {
        var t = s.Entry;
        int state = (int)e.State;
        if (!TcpStates.Repairable(state))
            throw new CrispException($"{target} was dumped in state {TcpStates.Name(state)}: not supported");
        if (!t.HasUnsqLen) throw new ImageException(TcpStreamFile(e), "no unsq_len");
        LibC.SetSockOptInt(fd, LibC.IPPROTO_TCP, LibC.TCP_REPAIR, 1, target);
        // Room for the queues while they are written; the dumped sizes are set afterwards.
        LibC.SetSockOptInt(fd, LibC.SOL_SOCKET, LibC.SO_SNDBUFFORCE, (int)Math.Min(int.MaxValue / 2, 2L * t.OutqLen + (256 << 10)), target);
        LibC.SetSockOptInt(fd, LibC.SOL_SOCKET, LibC.SO_RCVBUFFORCE, (int)Math.Min(int.MaxValue / 2, 2L * t.InqLen + (256 << 10)), target);
        var src = address(e.SrcPort, e.SrcAddr);
        fixed (byte* a = src) Errno.Check(LibC.bind(fd, a, (uint)src.Length), "bind", target);
        // A FIN received or sent took one sequence number: the queues start one before it.
        uint inqSeq = t.InqSeq, outqSeq = t.OutqSeq;
        if (TcpStates.Has(state, TcpStates.RcvqFirstFin | TcpStates.RcvqSecondFin)) inqSeq--;
        // So did the SYN of a connection still in SYN_SENT.
        if (TcpStates.Has(state, TcpStates.SndqFirstFin | TcpStates.SndqSecondFin) || state == LibC.TCP_SYN_SENT) outqSeq--;
        SetSeq(fd, LibC.TCP_RECV_QUEUE, inqSeq - t.InqLen, target);
        SetSeq(fd, LibC.TCP_SEND_QUEUE, outqSeq - t.OutqLen, target);
        var dst = address(e.DstPort, e.DstAddr);
        bool synSent = state == LibC.TCP_SYN_SENT;
        // A handshake not done yet is started again for real (soccr's way): out of repair mode, connect
        // sends a SYN with the dumped initial sequence number (the lock drops it until the restore ends;
        // the kernel sends it again).
        if (synSent) LibC.SetSockOptInt(fd, LibC.IPPROTO_TCP, LibC.TCP_REPAIR, 0, target);
        fixed (byte* a = dst)
            if (LibC.connect(fd, a, (uint)dst.Length) != 0 && Errno.Last != Errno.EINPROGRESS)
                throw Errno.Failure(synSent ? "connect (SYN_SENT)" : "connect (repair)", target);
        if (synSent) LibC.SetSockOptInt(fd, LibC.IPPROTO_TCP, LibC.TCP_REPAIR, 1, target);
        var opts = new List<LibC.tcp_repair_opt>();
        if ((t.OptMask & LibC.TCPI_OPT_SACK) != 0) opts.Add(new() { opt_code = LibC.TCPOPT_SACK_PERM });
        if ((t.OptMask & LibC.TCPI_OPT_WSCALE) != 0) opts.Add(new() { opt_code = LibC.TCPOPT_WINDOW, opt_val = t.SndWscale + (t.RcvWscale << 16) });
        if ((t.OptMask & LibC.TCPI_OPT_TIMESTAMPS) != 0) opts.Add(new() { opt_code = LibC.TCPOPT_TIMESTAMP });
        opts.Add(new() { opt_code = LibC.TCPOPT_MAXSEG, opt_val = t.MssClamp });
        var arr = opts.ToArray();
        if (!synSent)   // nothing negotiated yet: the SYN-ACK will
            fixed (LibC.tcp_repair_opt* o = arr)
                Errno.Check(LibC.setsockopt(fd, LibC.IPPROTO_TCP, LibC.TCP_REPAIR_OPTIONS, o, (uint)(arr.Length * sizeof(LibC.tcp_repair_opt))),
                    "setsockopt(TCP_REPAIR_OPTIONS)", target);
        if ((t.OptMask & LibC.TCPI_OPT_TIMESTAMPS) != 0)
            LibC.SetSockOptInt(fd, LibC.IPPROTO_TCP, LibC.TCP_TIMESTAMP, (int)t.Timestamp, target);
        if (s.RecvQueue.Length > 0)
        {
            LibC.SetSockOptInt(fd, LibC.IPPROTO_TCP, LibC.TCP_REPAIR_QUEUE, LibC.TCP_RECV_QUEUE, target);
            Send(fd, s.RecvQueue, "receive", target);
        }
        uint unsent = Math.Min(t.UnsqLen, t.OutqLen);
        int sent = (int)(t.OutqLen - unsent);
        if (sent > 0)
        {
            LibC.SetSockOptInt(fd, LibC.IPPROTO_TCP, LibC.TCP_REPAIR_QUEUE, LibC.TCP_SEND_QUEUE, target);
            Send(fd, s.SendQueue.AsSpan(0, sent).ToArray(), "send", target);
        }
        if (t.HasSndWnd)
        {
            var w = new LibC.tcp_repair_window
            {
                snd_wl1 = t.SndWl1, snd_wnd = t.SndWnd, max_window = t.MaxWindow, rcv_wnd = t.RcvWnd, rcv_wup = t.RcvWup,
            };
            if (TcpStates.Has(state, TcpStates.RcvqFirstFin | TcpStates.RcvqSecondFin))
            {
                w.rcv_wup--;
                w.rcv_wnd++;
            }
            Errno.Check(LibC.setsockopt(fd, LibC.IPPROTO_TCP, LibC.TCP_REPAIR_WINDOW, &w, (uint)sizeof(LibC.tcp_repair_window)),
                "setsockopt(TCP_REPAIR_WINDOW)", target);
        }
        LibC.SetSockOptInt(fd, LibC.IPPROTO_TCP, LibC.TCP_REPAIR_QUEUE, LibC.TCP_NO_QUEUE, target);
        if (unsent > 0)
        {
            // Never sent: written as the program would have, out of repair mode (soccr's order).
            LibC.SetSockOptInt(fd, LibC.IPPROTO_TCP, LibC.TCP_REPAIR, 0, target);
            Send(fd, s.SendQueue.AsSpan(sent).ToArray(), "unsent send", target);
            LibC.SetSockOptInt(fd, LibC.IPPROTO_TCP, LibC.TCP_REPAIR, 1, target);
        }
        // Half-closed (soccr's order): our FIN goes in the send queue through shutdown, the peer's
        // FIN into the receive queue as a packet crisp makes and marks so the lock lets it by.
        var src0 = src;
        if (TcpStates.Has(state, TcpStates.SndqFirstFin)) FinInSendQueue(fd, TcpStates.Has(state, TcpStates.SndqFinAcked), target);
        if (TcpStates.Has(state, TcpStates.RcvqFirstFin | TcpStates.RcvqSecondFin))
            RawPacket.Send((int)e.Family, dst, src0, inqSeq, outqSeq - t.OutqLen, t.RcvWnd, RawPacket.FIN | RawPacket.ACK, target);
        if (TcpStates.Has(state, TcpStates.SndqSecondFin)) FinInSendQueue(fd, TcpStates.Has(state, TcpStates.SndqFinAcked), target);
        if (TcpStates.Has(state, TcpStates.SndqFinAcked))
            RawPacket.Send((int)e.Family, dst, src0, inqSeq + (TcpStates.Has(state, TcpStates.RcvqFinAcked) ? 1u : 0u), outqSeq + 1 - t.OutqLen, t.RcvWnd, RawPacket.ACK, target);
    }

    /// <summary>shutdown(SHUT_WR) in repair mode queues a FIN; with TCP_SEND_QUEUE chosen it counts as sent already.</summary>
    private static void FinInSendQueue(int fd, bool acked, string target)
    {
        if (acked) LibC.SetSockOptInt(fd, LibC.IPPROTO_TCP, LibC.TCP_REPAIR_QUEUE, LibC.TCP_SEND_QUEUE, target);
        Errno.Check(LibC.shutdown(fd, LibC.SHUT_WR), "shutdown(SHUT_WR) (repair)", target);
        if (acked) LibC.SetSockOptInt(fd, LibC.IPPROTO_TCP, LibC.TCP_REPAIR_QUEUE, LibC.TCP_NO_QUEUE, target);
    }

    /// <summary>Out of repair mode, with the dumped SO_REUSEADDR back (leaving repair resets it).</summary>
    public static void Finish(int fd, bool reuseAddr, string target)
    {
        LibC.SetSockOptInt(fd, LibC.IPPROTO_TCP, LibC.TCP_REPAIR, 0, target);
        LibC.SetSockOptInt(fd, LibC.SOL_SOCKET, LibC.SO_REUSEADDR, reuseAddr ? 1 : 0, target);
    }

    private static string TcpStreamFile(InetSkEntry e) => ImageDir.TcpStreamName(e.Ino);

    private static void SetSeq(int fd, int queue, uint seq, string target)
    {
        LibC.SetSockOptInt(fd, LibC.IPPROTO_TCP, LibC.TCP_REPAIR_QUEUE, queue, target);
        LibC.SetSockOptInt(fd, LibC.IPPROTO_TCP, LibC.TCP_QUEUE_SEQ, (int)seq, target);
    }

    /// <summary>
    /// Writes a queue's bytes. In repair mode the kernel makes one linear buffer of what it is given,
    /// which a large write may fail to get (ENOMEM): smaller pieces then (soccr's rule).
    /// </summary>
    private static void Send(int fd, byte[] data, string queue, string target)
    {
        int off = 0, chunk = data.Length;
        while (off < data.Length)
        {
            int n0 = Math.Min(chunk, data.Length - off);
            nint n;
            fixed (byte* d = data) n = LibC.sendto(fd, d + off, (nuint)n0, LibC.MSG_NOSIGNAL, null, 0);
            if (n <= 0)
            {
                int err = Errno.Last;
                if (chunk > 1024 && err != Errno.EAGAIN) { chunk >>= 1; continue; }
                throw new SyscallException($"send({queue} queue, {data.Length - off} of {data.Length} bytes left)", err, target);
            }
            off += (int)n;
        }
    }
}

/// <summary>
/// One TCP segment crisp writes as if the peer had sent it (a FIN, or the ACK of ours), so that a
/// half-closed connection gets the peer's FIN into its receive queue. Raw IP with our own headers,
/// marked SOCCR_MARK so the network lock lets it through; no options (Linux accepts a segment
/// without timestamps on a connection that uses them).
/// </summary>
internal static unsafe class RawPacket
{
    public const byte FIN = 0x01, ACK = 0x10;

    private static bool Mapped(byte[] sa6) => sa6.AsSpan(8, 10).IndexOfAnyExcept((byte)0) < 0 && sa6[18] == 0xff && sa6[19] == 0xff;

    private static byte[] V4(byte[] sa6)
    {
        var sa = new byte[16];
        System.Buffers.Binary.BinaryPrimitives.WriteUInt16LittleEndian(sa, LibC.AF_INET);
        sa6.AsSpan(2, 2).CopyTo(sa.AsSpan(2));
        sa6.AsSpan(20, 4).CopyTo(sa.AsSpan(4));
        return sa;
    }

    /// <summary><paramref name="from"/> and <paramref name="to"/> are sockaddr_in/sockaddr_in6 as bytes.</summary>
    public static void Send(int family, byte[] from, byte[] to, uint seq, uint ack, uint window, byte flags, string target)
    {
        if (family == LibC.AF_INET6 && Mapped(from) && Mapped(to))
        {
            // IPv4 carried by an IPv6 socket: the wire packet is IPv4.
            (from, to, family) = (V4(from), V4(to), LibC.AF_INET);
        }
        bool v4 = family == LibC.AF_INET;
        int ipLen = v4 ? 20 : 40, addrAt = v4 ? 4 : 8, addrLen = v4 ? 4 : 16;
        var pkt = new byte[ipLen + 20];
        var src = from.AsSpan(addrAt, addrLen);
        var dst = to.AsSpan(addrAt, addrLen);
        if (v4)
        {
            pkt[0] = 0x45;
            System.Buffers.Binary.BinaryPrimitives.WriteUInt16BigEndian(pkt.AsSpan(2), (ushort)pkt.Length);
            pkt[8] = 64;
            pkt[9] = (byte)LibC.IPPROTO_TCP;
            src.CopyTo(pkt.AsSpan(12));
            dst.CopyTo(pkt.AsSpan(16));
        }
        else
        {
            pkt[0] = 0x60;
            System.Buffers.Binary.BinaryPrimitives.WriteUInt16BigEndian(pkt.AsSpan(4), 20);
            pkt[6] = (byte)LibC.IPPROTO_TCP;
            pkt[7] = 64;
            src.CopyTo(pkt.AsSpan(8));
            dst.CopyTo(pkt.AsSpan(24));
        }
        var tcp = pkt.AsSpan(ipLen);
        from.AsSpan(2, 2).CopyTo(tcp);          // ports are big-endian in the sockaddr already
        to.AsSpan(2, 2).CopyTo(tcp[2..]);
        System.Buffers.Binary.BinaryPrimitives.WriteUInt32BigEndian(tcp[4..], seq);
        System.Buffers.Binary.BinaryPrimitives.WriteUInt32BigEndian(tcp[8..], ack);
        tcp[12] = 5 << 4;
        tcp[13] = flags;
        System.Buffers.Binary.BinaryPrimitives.WriteUInt16BigEndian(tcp[14..], (ushort)Math.Min(window, 0xffff));
        // Checksum over the pseudo-header (addresses, protocol, length) and the segment.
        uint sum = 0;
        for (int i = 0; i < addrLen; i += 2) sum += (uint)(src[i] << 8 | src[i + 1]) + (uint)(dst[i] << 8 | dst[i + 1]);
        sum += (uint)LibC.IPPROTO_TCP + 20;
        for (int i = 0; i < 20; i += 2) sum += (uint)(tcp[i] << 8 | tcp[i + 1]);
        while (sum >> 16 != 0) sum = (sum & 0xffff) + (sum >> 16);
        System.Buffers.Binary.BinaryPrimitives.WriteUInt16BigEndian(tcp[16..], (ushort)~sum);

        int fd = Errno.Check(LibC.socket(family, LibC.SOCK_RAW | LibC.SOCK_CLOEXEC, LibC.IPPROTO_RAW), "socket(SOCK_RAW, IPPROTO_RAW)", target);
        try
        {
            LibC.SetSockOptInt(fd, LibC.SOL_SOCKET, LibC.SO_MARK, NetworkLock.SOCCR_MARK, target);
            if (!v4) LibC.SetSockOptInt(fd, LibC.IPPROTO_IPV6, LibC.IPV6_HDRINCL, 1, target);
            var sa = (byte[])to.Clone();
            sa[2] = sa[3] = 0;                  // raw sockets take no port
            fixed (byte* p = pkt)
            fixed (byte* a = sa)
                if (LibC.sendto(fd, p, (nuint)pkt.Length, 0, a, (uint)sa.Length) != pkt.Length)
                    throw new SyscallException("sendto(raw TCP " + ((flags & FIN) != 0 ? "FIN" : "ACK") + ")", Errno.Last, target);
        }
        finally { LibC.close(fd); }
    }
}

internal static class TcpStates
{
    // soccr's masks (1 << state): which FINs a half-closed state has in which queue.
    public const int SndqFirstFin = (1 << LibC.TCP_FIN_WAIT1) | (1 << LibC.TCP_FIN_WAIT2) | (1 << LibC.TCP_CLOSING);
    public const int SndqSecondFin = (1 << LibC.TCP_LAST_ACK) | (1 << LibC.TCP_CLOSE);
    public const int SndqFinAcked = (1 << LibC.TCP_FIN_WAIT2) | (1 << LibC.TCP_CLOSE);
    public const int RcvqFirstFin = (1 << LibC.TCP_CLOSE_WAIT) | (1 << LibC.TCP_LAST_ACK) | (1 << LibC.TCP_CLOSE);
    public const int RcvqSecondFin = 1 << LibC.TCP_CLOSING;
    public const int RcvqFinAcked = 1 << LibC.TCP_CLOSE;

    public static bool Has(int state, int mask) => ((1 << state) & mask) != 0;

    /// <summary>
    /// States TCP repair brings back (soccr's list): established, the half-closed ones, a connect not
    /// answered yet, and a connection that ended (CLOSE: both FINs in, or reset) on a socket still open.
    /// </summary>
    public static bool Repairable(int s) => s is LibC.TCP_ESTABLISHED or LibC.TCP_SYN_SENT or LibC.TCP_CLOSE or LibC.TCP_FIN_WAIT1 or LibC.TCP_FIN_WAIT2 or
        LibC.TCP_CLOSE_WAIT or LibC.TCP_LAST_ACK or LibC.TCP_CLOSING;

    public static string Name(int s) => s switch
    {
        1 => "ESTABLISHED", 2 => "SYN_SENT", 3 => "SYN_RECV", 4 => "FIN_WAIT1", 5 => "FIN_WAIT2", 6 => "TIME_WAIT",
        7 => "CLOSE", 8 => "CLOSE_WAIT", 9 => "LAST_ACK", 10 => "LISTEN", 11 => "CLOSING", _ => $"state {s}",
    };
}
