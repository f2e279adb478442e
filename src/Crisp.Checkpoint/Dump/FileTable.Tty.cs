using Crisp.Images.Proto;
using Crisp.Native;
using Crisp.Native.ProcFs;

namespace Crisp.Checkpoint.Dump;

/// <summary>
/// Terminals, in CRIU's layout: each open description of a pty end or of /dev/tty is a TTY
/// entry of files.img (with a regular entry for its path, regf_id), and each terminal end once a
/// tty-info.img record: index, termios, locked termios, window size, packet mode, lock, and the
/// session and foreground group it is the controlling terminal of. Bytes queued in either
/// direction go to tty-data.img (CRIU does the same, criu/tty.c).
///
/// Only Unix98 ptys whose master is in the tree (or whose master is gone and the slaves hung
/// up) are TTY entries. A slave whose master lives outside the tree (the terminal crisp was
/// started from) and a /dev/tty of such a terminal stay paths, as before: reopened by path,
/// or given crisp's terminal with restore --shell-job. Consoles, virtual consoles and serial
/// lines are refused.
/// </summary>
internal sealed unsafe partial class FileTable
{
    private const uint CttyInfoId = 1006 << 1;          // CRIU's CTTY_INDEX, as tty_gen_id makes it
    private const int MaxQueued = 4095;                 // N_TTY_BUF_SIZE less the byte canonical mode keeps

    private sealed record TtyFd(uint FileId, FdinfoEntry Fdinfo, TtyKind Kind, int Index, bool Hung, string Where);

    private readonly Dictionary<uint, TtyInfoEntry> _ttyInfos = [];
    private readonly List<TtyFd> _ttyFds = [];
    private readonly Dictionary<int, (int Local, string Where, bool Packet)> _ptyMasters = [];   // index → crisp's copy
    private readonly List<TtyDataEntry> _ttyData = [];
    private readonly HashSet<uint> _ttyFiles = [];

    public IReadOnlyCollection<TtyInfoEntry> TtyInfos => _ttyInfos.Values;
    public IReadOnlyList<TtyDataEntry> TtyData => _ttyData;

    /// <summary>A terminal kind crisp refuses, or null for ptys and /dev/tty.</summary>
    private static string? TerminalRefusal(TtyKind kind) => kind switch
    {
        TtyKind.Console => "a console (/dev/console)",
        TtyKind.VirtualConsole => "a virtual console",
        TtyKind.Serial => "a serial terminal",
        _ => null,
    };

    /// <summary>The TTY entry (and its path entry at id + 1) for fd <paramref name="fd"/> of <paramref name="pid"/>.</summary>
    private void CollectTty(uint id, int pid, int pidfd, int fd, int fileFlags, string link, LibC.stat_t st, TtyKind kind)
    {
        string where = $"process {pid}: fd {fd} ({link})";
        int local = LibC.pidfd_getfd(pidfd, fd);
        if (local < 0) throw Errno.Failure("pidfd_getfd", $"{pid}, fd {fd}");
        bool keep = false;
        try
        {
            int index = -1;
            uint infoId;
            var stat = Proc.Stat(pid);
            if (kind == TtyKind.PtyMaster)
            {
                index = IoctlInt(local, Tty.TIOCGPTN, where, "TIOCGPTN");
                infoId = (uint)(index << 1) | 1;
            }
            else if (kind == TtyKind.PtySlave)
            {
                index = Tty.Classify(st.st_rdev).Index;
                infoId = (uint)(index << 1);
            }
            else
            {
                // /dev/tty: the session's controlling terminal, whichever it is.
                var (ck, ci) = stat.TtyNr == 0 ? (TtyKind.None, -1) : Tty.Classify(Tty.RdevOfTtyNr(stat.TtyNr));
                if (ck != TtyKind.PtySlave)
                    throw new CrispException($"{where} is /dev/tty of a controlling terminal that is not a pty ({(stat.TtyNr == 0 ? "none" : $"device {Tty.Major(Tty.RdevOfTtyNr(stat.TtyNr))}:{Tty.Minor(Tty.RdevOfTtyNr(stat.TtyNr))}")}): not supported");
                index = ci;
                infoId = CttyInfoId;
            }
            bool hung = !TryTermios(local, out _);
            _files.Add(new FileEntry
            {
                Type = FdTypes.Tty, Id = id,
                Tty = new TtyFileEntry { Id = id, TtyInfoId = infoId, Flags = (uint)fileFlags, Fown = Owner(pid, pidfd, fd), RegfId = id + 1 },
            });
            _files.Add(new FileEntry
            {
                Type = FdTypes.Reg, Id = id + 1,
                Reg = new RegFileEntry { Id = id + 1, Flags = (uint)fileFlags, Pos = 0, Fown = NoOwner(), Name = Undeleted(link), Size = 0, Mode = st.st_mode },
            });
            _ttyFiles.Add(id);
            _pendingTty = (id, kind, index, hung, where);
            if (_ttyInfos.ContainsKey(infoId)) return;
            var info = new TtyInfoEntry
            {
                Id = infoId, Type = kind == TtyKind.CurrentTty ? TtyType.Ctty : TtyType.Pty, Rdev = (uint)st.st_rdev, Dev = (uint)st.st_dev,
                Uid = st.st_uid, Gid = st.st_gid, Locked = false, PacketMode = false, Sid = 0, Pgrp = 0, Exclusive = IoctlInt(local, Tty.TIOCGEXCL, where, "TIOCGEXCL", hungOk: hung) != 0,
            };
            if (kind != TtyKind.CurrentTty) info.Pty = new TtyPtyEntry { Index = (uint)index };
            if (kind == TtyKind.PtyMaster)
            {
                info.Locked = IoctlInt(local, Tty.TIOCGPTLCK, where, "TIOCGPTLCK") != 0;
                info.PacketMode = IoctlInt(local, Tty.TIOCGPKT, where, "TIOCGPKT") != 0;
                // From the master, the slave's session and foreground group, whoever asks (tiocgsid).
                int sid = IoctlInt(local, Tty.TIOCGSID, where, "TIOCGSID", enottyOk: true);
                int pgrp = IoctlInt(local, Tty.TIOCGPGRP, where, "TIOCGPGRP", enottyOk: true);
                info.Sid = sid > 0 ? TreeSession(sid, where, index) : 0;
                info.Pgrp = sid > 0 && pgrp > 0 ? TreeGroup(pgrp, where) : 0;
                _ptyMasters[index] = (local, where, info.PacketMode);
                keep = true;
            }
            else if (!hung && stat.TtyNr != 0 && Tty.RdevOfTtyNr(stat.TtyNr) == Tty.SlaveRdev(index))
            {
                // A slave (or /dev/tty) of the holder's controlling terminal: CRIU's parasite reads these in the task.
                info.Sid = TreePid(stat.Session) is int s ? (uint)s : 0;
                info.Pgrp = stat.Tpgid > 0 && TreePid(stat.Tpgid) is int g ? (uint)g : 0;
            }
            if (!hung)
            {
                TryTermios(local, out var t);
                info.Termios = ToEntry(t);
                info.TermiosLocked = ToEntry(Termios(local, Tty.TIOCGLCKTRMIOS, where));
                byte* w = stackalloc byte[Tty.WinsizeSize];
                Errno.Check(LibC.ioctl(local, Tty.TIOCGWINSZ, w), "ioctl(TIOCGWINSZ)", where);
                var ws = Tty.Winsize.Parse(new ReadOnlySpan<byte>(w, Tty.WinsizeSize));
                info.Winsize = new WinsizeEntry { WsRow = ws.Row, WsCol = ws.Col, WsXpixel = ws.Xpixel, WsYpixel = ws.Ypixel };
            }
            _ttyInfos[infoId] = info;
        }
        finally { if (!keep) LibC.close(local); }
    }

    private (uint Id, TtyKind Kind, int Index, bool Hung, string Where)? _pendingTty;

    /// <summary>After CollectTty: the fdinfo entry of that fd, kept to turn it into a path if its master is outside the tree.</summary>
    private void NoteTtyFd(uint id, FdinfoEntry fdinfo, string where)
    {
        if (_pendingTty is { } p && p.Id == id) { _ttyFds.Add(new TtyFd(id, fdinfo, p.Kind, p.Index, p.Hung, where)); _pendingTty = null; return; }
        var first = _ttyFds.First(t => t.FileId == id);
        _ttyFds.Add(first with { Fdinfo = fdinfo });
    }

    private uint TreeSession(int hostSid, string where, int index)
    {
        if (TreePid(hostSid) is int s && Proc.Stat(hostSid).Session == hostSid) return (uint)s;
        throw new CrispException($"{where} is a pty master (index {index}) that is the controlling terminal of session {hostSid}, " +
                                 "whose leader is not in the dumped tree: not supported");
    }

    private uint TreeGroup(int hostPgrp, string where) => TreePid(hostPgrp) is int g ? (uint)g
        : throw new CrispException($"{where}: the foreground process group {hostPgrp} of its terminal is not in the dumped tree: not supported");

    /// <summary>
    /// Once every process was collected: slaves and /dev/tty of a pty whose master is outside the
    /// tree become paths again; then the bytes queued in each pty with its master here are read.
    /// </summary>
    public void FinishTtys()
    {
        try
        {
            foreach (var t in _ttyFds)
            {
                bool masterHere = _ptyMasters.ContainsKey(t.Index);
                if (t.Kind == TtyKind.PtyMaster || masterHere || (t.Kind == TtyKind.PtySlave && t.Hung)) continue;
                // Not a pty of the tree: the path, as every version of crisp before this one dumped it.
                var file = _files[(int)t.FileId - 1];
                if (file.Type == FdTypes.Tty)
                {
                    var reg = _files[(int)t.FileId].Reg.Clone();
                    reg.Id = t.FileId;
                    reg.Fown = file.Tty.Fown;
                    _files[(int)t.FileId - 1] = new FileEntry { Type = FdTypes.Reg, Id = t.FileId, Reg = reg };
                    _ttyFiles.Remove(t.FileId);
                }
                t.Fdinfo.Type = FdTypes.Reg;
            }
            // Infos only of what is still a terminal entry.
            var used = _ttyFiles.Select(id => _files[(int)id - 1].Tty.TtyInfoId).ToHashSet();
            foreach (var id in _ttyInfos.Keys.Where(k => !used.Contains(k)).ToList()) _ttyInfos.Remove(id);
            foreach (var (index, m) in _ptyMasters) ReadQueued(index, m.Local, m.Where, m.Packet);
        }
        finally
        {
            foreach (var m in _ptyMasters.Values) LibC.close(m.Local);
            _ptyMasters.Clear();
        }
    }

    /// <summary>
    /// The bytes waiting in both directions of pty <paramref name="index"/>: toward the master (what the
    /// slave side wrote) and toward the slave (input not yet read, a partial canonical line
    /// included). They are read, then put straight back (TIOCSTI, echo off) so the tree, which may
    /// go on running, keeps them in the same order.
    /// </summary>
    private void ReadQueued(int index, int master, string where, bool packet)
    {
        uint masterInfo = (uint)(index << 1) | 1, slaveInfo = (uint)(index << 1);
        if (_ttyInfos.TryGetValue(masterInfo, out var mi) && mi.Locked) return;   // no slave can be opened; nothing was queued through one
        int slave = Errno.Check(LibC.ioctl(master, Tty.TIOCGPTPEER, (void*)(LibC.O_RDWR | LibC.O_NOCTTY | LibC.O_NONBLOCK | LibC.O_CLOEXEC)),
            "ioctl(TIOCGPTPEER)", where);
        try
        {
            int waiting = IoctlInt(master, Tty.FIONREAD, where, "FIONREAD");
            if (waiting >= MaxQueued)
                throw new CrispException($"{where}: pty {index} has {waiting} bytes or more unread by its master, more than crisp restores ({MaxQueued - 1})");
            var toMaster = ReadAvailable(master, packet, where, poll: true);
            var t = Termios(slave, Tty.TCGETS, where);
            var toSlave = ReadAvailable(slave, false, where, poll: false);
            const uint ICANON = 0x2;
            if ((t.Lflag & ICANON) != 0)
            {
                // A partial line is not readable in canonical mode: without ICANON it is.
                SetTermios(slave, t with { Lflag = t.Lflag & ~ICANON }, where);
                toSlave = [.. toSlave, .. ReadAvailable(slave, false, where, poll: false)];
                SetTermios(slave, t, where);
            }
            if (toSlave.Length >= MaxQueued)
                throw new CrispException($"{where}: pty {index} has {toSlave.Length} bytes unread by its slave side, more than crisp restores");
            PutBack(master, slave, toMaster, toSlave, t, where);
            if (toMaster.Length > 0) _ttyData.Add(new TtyDataEntry { TtyId = masterInfo, Data = Google.Protobuf.ByteString.CopyFrom(toMaster) });
            if (toSlave.Length > 0) _ttyData.Add(new TtyDataEntry { TtyId = slaveInfo, Data = Google.Protobuf.ByteString.CopyFrom(toSlave) });
            if (toMaster.Length + toSlave.Length > 0)
                Log.D($"{where}: pty {index}: {toMaster.Length} byte(s) queued toward the master, {toSlave.Length} toward the slave");
        }
        finally { LibC.close(slave); }
    }

    /// <summary>
    /// Queues bytes again: toward the master straight into the master's line discipline, toward
    /// the slave into the slave's with echo off (they were echoed when they first came). TIOCSTI
    /// goes through the line discipline at once, unlike a write to the master (a work queue later).
    /// </summary>
    internal static void PutBack(int master, int slave, byte[] toMaster, byte[] toSlave, Tty.Termios slaveTermios, string where)
    {
        foreach (byte b in toMaster) Sti(master, b, where);
        if (toSlave.Length == 0) return;
        SetTermios(slave, slaveTermios.WithoutEcho(), where);
        try { foreach (byte b in toSlave) Sti(slave, b, where); }
        finally { SetTermios(slave, slaveTermios, where); }
    }

    private static void Sti(int fd, byte b, string where) => Errno.Check(LibC.ioctl(fd, Tty.TIOCSTI, &b), "ioctl(TIOCSTI)", where);

    /// <summary>
    /// What a reader of <paramref name="fd"/> would get now without waiting: a master (the tree's
    /// description, maybe blocking; raw, so readable means a byte) is polled before each read; the
    /// slave is crisp's own, non-blocking (poll would wait for VMIN bytes).
    /// </summary>
    private static byte[] ReadAvailable(int fd, bool packet, string where, bool poll)
    {
        var got = new List<byte>();
        var buf = new byte[MaxQueued + 2];
        var p = new LibC.PollFd { fd = fd, events = LibC.POLLIN };
        while (got.Count <= MaxQueued)
        {
            p.revents = 0;
            if (poll && (LibC.poll(&p, 1, 0) <= 0 || (p.revents & LibC.POLLIN) == 0)) break;
            nint n;
            fixed (byte* b = buf) n = LibC.read(fd, b, (nuint)buf.Length);
            if (n < 0 && Errno.Last is Errno.EAGAIN or Errno.EIO) break;
            if (n < 0) throw Errno.Failure("read", where);
            if (n == 0) break;
            var data = buf.AsSpan(0, (int)n);
            got.AddRange(packet ? Tty.PacketData(data) : data);
        }
        return [.. got];
    }

    private static bool TryTermios(int fd, out Tty.Termios t)
    {
        byte* raw = stackalloc byte[Tty.TermiosSize];
        t = default;
        if (LibC.ioctl(fd, Tty.TCGETS, raw) != 0) return false;
        t = Tty.Termios.Parse(new ReadOnlySpan<byte>(raw, Tty.TermiosSize));
        return true;
    }

    private static Tty.Termios Termios(int fd, ulong request, string where)
    {
        byte* raw = stackalloc byte[Tty.TermiosSize];
        Errno.Check(LibC.ioctl(fd, request, raw), request == Tty.TCGETS ? "ioctl(TCGETS)" : "ioctl(TIOCGLCKTRMIOS)", where);
        return Tty.Termios.Parse(new ReadOnlySpan<byte>(raw, Tty.TermiosSize));
    }

    internal static void SetTermios(int fd, Tty.Termios t, string where, ulong request = Tty.TCSETS)
    {
        fixed (byte* raw = t.ToBytes())
            Errno.Check(LibC.ioctl(fd, request, raw), request == Tty.TCSETS ? "ioctl(TCSETS)" : "ioctl(TIOCSLCKTRMIOS)", where);
    }

    private static int IoctlInt(int fd, ulong request, string where, string name, bool enottyOk = false, bool hungOk = false)
    {
        int v = 0;
        if (LibC.ioctl(fd, request, &v) == 0) return v;
        int e = Errno.Last;
        if ((enottyOk && e == Errno.ENOTTY) || (hungOk && e == Errno.EIO)) return 0;
        throw new SyscallException($"ioctl({name})", e, where);
    }

    internal static TermiosEntry ToEntry(Tty.Termios t)
    {
        var e = new TermiosEntry { CIflag = t.Iflag, COflag = t.Oflag, CCflag = t.Cflag, CLflag = t.Lflag, CLine = t.Line, CIspeed = 0, COspeed = 0 };
        foreach (byte c in t.Cc) e.CCc.Add(c);
        return e;
    }
}
