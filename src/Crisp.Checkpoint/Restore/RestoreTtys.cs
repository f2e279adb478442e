using Crisp.Checkpoint.Dump;
using Crisp.Images;
using Crisp.Images.Proto;
using Crisp.Native;

namespace Crisp.Checkpoint.Restore;

/// <summary>
/// Ptys, made again by crisp itself before any process gets its files (criu/tty.c has the facts):
///
///  - each pty of the images is made with its dumped index: /dev/ptmx is opened until TIOCGPTN
///    gives that index (the kernel hands out the lowest free one; the ones below are held
///    meanwhile and closed after), unlocked, given its termios, locked termios, window size and
///    packet mode; a pty whose master was gone at dump time (its slaves hung up) gets a master
///    that crisp closes again once the slaves exist, which hangs them up as they were;
///  - each slave description is opened through its master (TIOCGPTPEER), never by a /dev/pts
///    path that could name another pty by then; O_NOCTTY always, the controlling terminal is
///    set on purpose below;
///  - the bytes that were queued are put back in order (TIOCSTI, echo off), and the pty is
///    locked again (TIOCSPTLCK) if it was;
///  - crisp keeps every description and places it in the processes that had it (pidfd_getfd,
///    SharedFiles.cs), like any description several processes share;
///  - a session whose controlling terminal was a pty: its leader opens a slave, TIOCSCTTY, and
///    TIOCSPGRP the dumped foreground group; the whole tree exists by then;
///  - /dev/tty descriptions are opened by the process itself in the files step, once its
///    session has its terminal again.
/// </summary>
internal sealed unsafe partial class RestoreSession
{

    private bool IsCtty(FileEntry f) => f.Type == FdTypes.Tty && _c.TtyInfos.TryGetValue(f.Tty.TtyInfoId, out var i) && i.Type == TtyType.Ctty;

    private void CreateTerminals()
    {
        var ttys = _c.Files.Values.Where(f => f.Type == FdTypes.Tty).ToList();
        if (ttys.Count == 0) return;
        string infoImage = _c.Dir.PathOf(ImageDir.TtyInfoName);
        _c.TtyInfos = _c.Dir.ReadTtyInfo().ToDictionary(i => i.Id);
        var data = _c.Dir.ReadTtyData().ToDictionary(d => d.TtyId, d => d.Data.ToByteArray());
        foreach (var f in ttys)
        {
            if (f.Tty is null) throw new ImageException(_c.Dir.PathOf(ImageDir.FilesName), $"file {f.Id} is a tty without its tty entry");
            if (!_c.TtyInfos.TryGetValue(f.Tty.TtyInfoId, out var info))
                throw new ImageException(infoImage, $"file {f.Id}: no tty info 0x{f.Tty.TtyInfoId:x}");
            if (info.Type is not (TtyType.Pty or TtyType.Ctty))
                throw new CrispException($"file {f.Id} is a terminal of kind {info.Type} (rdev 0x{info.Rdev:x}), which crisp cannot restore");
            if (info.Type == TtyType.Pty && info.Pty is null) throw new ImageException(infoImage, $"tty info 0x{info.Id:x} is a pty without an index");
        }
        foreach (var pty in ttys.Where(f => !IsCtty(f)).GroupBy(f => _c.TtyInfos[f.Tty.TtyInfoId].Pty.Index).OrderBy(g => g.Key))
            CreatePty((int)pty.Key, pty.ToList(), data);
        foreach (var info in _c.TtyInfos.Values.Where(i => i.Type == TtyType.Pty && i.Sid != 0 && (i.Id & 1) == 1))
            SetControllingTerminal(info);
    }

    private void CreatePty(int index, List<FileEntry> files, Dictionary<uint, byte[]> data)
    {
        var masters = files.Where(f => (f.Tty.TtyInfoId & 1) == 1).ToList();
        var slaves = files.Where(f => (f.Tty.TtyInfoId & 1) == 0).ToList();
        if (masters.Count > 1) throw new ImageException(_c.Dir.PathOf(ImageDir.FilesName), $"pty {index} has {masters.Count} master descriptions");
        var masterInfo = _c.TtyInfos.GetValueOrDefault((uint)(index << 1) | 1);
        var slaveInfo = _c.TtyInfos.GetValueOrDefault((uint)(index << 1));
        string where = $"pty {index}";
        if (masters.Count == 0)
        {
            // No master: the slaves were hung up (crisp makes a master for them and closes it),
            // or the master was outside the tree (CRIU's --shell-job images: the files step gives crisp's terminal).
            if (slaveInfo?.Termios != null) return;
        }
        var master = masters.FirstOrDefault();
        string path = master is null ? "/dev/ptmx" : _c.Files.GetValueOrDefault(master.Tty.RegfId)?.Reg?.Name ?? "/dev/ptmx";
        if (path is not ("/dev/ptmx" or "/dev/pts/ptmx"))
            throw new CrispException($"{where}: its master was opened as {path}, not /dev/ptmx or /dev/pts/ptmx: not supported");
        int flags = master is null ? LibC.O_RDWR : (int)master.Tty.Flags & (LibC.O_ACCMODE | LibC.O_NONBLOCK | LibC.O_APPEND);
        int m = OpenPtmxIndex(path, flags, index);
        try
        {
            int unlock = 0;
            Errno.Check(LibC.ioctl(m, Tty.TIOCSPTLCK, &unlock), "ioctl(TIOCSPTLCK, 0)", where);
            var termios = masterInfo?.Termios ?? slaveInfo?.Termios;
            if ((masterInfo?.TermiosLocked ?? slaveInfo?.TermiosLocked) is { } locked)
                FileTable.SetTermios(m, FromEntry(locked, where), where, Tty.TIOCSLCKTRMIOS);
            if (termios != null) FileTable.SetTermios(m, FromEntry(termios, where), where);
            if ((masterInfo?.Winsize ?? slaveInfo?.Winsize) is { } ws)
            {
                fixed (byte* w = new Tty.Winsize((ushort)ws.WsRow, (ushort)ws.WsCol, (ushort)ws.WsXpixel, (ushort)ws.WsYpixel).ToBytes())
                    Errno.Check(LibC.ioctl(m, Tty.TIOCSWINSZ, w), "ioctl(TIOCSWINSZ)", where);
            }
            if (masterInfo is { PacketMode: true })
            {
                int on = 1;
                Errno.Check(LibC.ioctl(m, Tty.TIOCPKT, &on), "ioctl(TIOCPKT)", where);
            }
            if (masterInfo is { Exclusive: true }) Errno.Check(LibC.ioctl(m, Tty.TIOCEXCL, null), "ioctl(TIOCEXCL)", where);
            bool owned = false;
            foreach (var s in slaves)
            {
                int sf = OpenSlave(m, (int)s.Tty.Flags, where);
                _c.CrispCopies[s.Id] = sf;
                if (!owned && slaveInfo is { HasUid: true, HasGid: true })
                {
                    LibC.stat_t st;
                    if (LibC.fstat(sf, &st) == 0 && (st.st_uid != slaveInfo.Uid || st.st_gid != slaveInfo.Gid))
                        Errno.Check(LibC.fchown(sf, slaveInfo.Uid, slaveInfo.Gid), "fchown", $"{where} (slave, to {slaveInfo.Uid}:{slaveInfo.Gid})");
                    owned = true;
                }
            }
            if (slaveInfo is { Exclusive: true } && slaves.Count > 0) Errno.Check(LibC.ioctl(_c.CrispCopies[slaves[0].Id], Tty.TIOCEXCL, null), "ioctl(TIOCEXCL)", where);
            byte[] toMaster = data.GetValueOrDefault((uint)(index << 1) | 1) ?? [], toSlave = data.GetValueOrDefault((uint)(index << 1)) ?? [];
            if (toMaster.Length + toSlave.Length > 0 && termios != null)
            {
                int tmp = OpenSlave(m, LibC.O_RDWR | LibC.O_NONBLOCK, where);
                try { FileTable.PutBack(m, tmp, toMaster, toSlave, FromEntry(termios, where), where); }
                finally { LibC.close(tmp); }
            }
            if (masterInfo is { Locked: true })
            {
                int lockOn = 1;
                Errno.Check(LibC.ioctl(m, Tty.TIOCSPTLCK, &lockOn), "ioctl(TIOCSPTLCK, 1)", where);
            }
            if (master is null)
            {
                // The master of hung-up slaves: closing it hangs them up again.
                LibC.close(m);
                Log.D($"restore: {where}: {slaves.Count} hung-up slave(s)");
                return;
            }
            _c.CrispCopies[master.Id] = m;
            _c.PtyMasters[index] = m;
            Log.D($"restore: {where}: master and {slaves.Count} slave description(s), {toMaster.Length}+{toSlave.Length} queued byte(s)");
        }
        catch
        {
            if (!_c.CrispCopies.ContainsValue(m)) LibC.close(m);
            throw;
        }
    }

    /// <summary>A new description of the slave of master <paramref name="m"/>, with the given status flags.</summary>
    private static int OpenSlave(int m, int flags, string where)
    {
        long open = (flags & (LibC.O_ACCMODE | LibC.O_NONBLOCK)) | LibC.O_NOCTTY | LibC.O_CLOEXEC;
        int sf = Errno.Check(LibC.ioctl(m, Tty.TIOCGPTPEER, (void*)open), "ioctl(TIOCGPTPEER)", where);
        if ((flags & LibC.O_APPEND) != 0)
            Errno.Check(LibC.fcntl(sf, LibC.F_SETFL, flags & (LibC.O_APPEND | LibC.O_NONBLOCK)), "fcntl(F_SETFL)", where);
        return sf;
    }

    /// <summary>
    /// A pty master with index <paramref name="index"/>: /dev/ptmx hands out the lowest free
    /// index, so lower ones are held until the wanted one comes. A pty of the dumped tree may take
    /// a moment to be released after its last holder was killed: a taken index is tried again
    /// for up to two seconds.
    /// </summary>
    private static int OpenPtmxIndex(string path, int flags, int index)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        while (true)
        {
            var held = new List<int>();
            int got = -1;
            try
            {
                while (held.Count <= index)
                {
                    int fd = Errno.Check(LibC.open(path, flags | LibC.O_NOCTTY | LibC.O_CLOEXEC, 0), "open", $"{path} (for pty {index})");
                    int n = 0;
                    if (LibC.ioctl(fd, Tty.TIOCGPTN, &n) != 0)
                    {
                        int e = Errno.Last;
                        LibC.close(fd);
                        throw new SyscallException("ioctl(TIOCGPTN)", e, path);
                    }
                    if (n == index) { got = fd; return fd; }
                    held.Add(fd);
                    if (n > index) break;
                }
            }
            finally
            {
                foreach (int fd in held) LibC.close(fd);
            }
            if (clock.ElapsedMilliseconds > 2000)
                throw new CrispException($"pty index {index} is in use by another pty here: the dumped one cannot be made again");
            Thread.Sleep(10);
        }
    }

    /// <summary>The session leader takes the pty as its controlling terminal, with the dumped foreground group.</summary>
    private void SetControllingTerminal(TtyInfoEntry info)
    {
        int index = (int)info.Pty.Index;
        if (!_c.PtyMasters.TryGetValue(index, out int m)) return;
        var leader = _c.Procs.FirstOrDefault(p => p.DumpedPid == info.Sid && p.Sid == p.DumpedPid)
            ?? throw new CrispException($"pty {index} was the controlling terminal of session {info.Sid}, whose leader is not in the images");
        var t = _c.Tasks[leader.Pid];
        int slave = OpenSlave(m, LibC.O_RDWR, $"pty {index}");
        try
        {
            int inTask = CrispFdIntoTask(leader, t, slave, $"a slave of pty {index}");
            try
            {
                t.Check(Code, $"ioctl(TIOCSCTTY) on pty {index}", LibC.SYS_ioctl, inTask, (long)Tty.TIOCSCTTY, 1);
                if (info.Pgrp != 0)
                {
                    var scratch = new Scratch(this, t.Pid);
                    Span<byte> pgrp = stackalloc byte[4];
                    System.Buffers.Binary.BinaryPrimitives.WriteInt32LittleEndian(pgrp, (int)info.Pgrp);
                    t.Check(Code, $"ioctl(TIOCSPGRP, {info.Pgrp}) on pty {index}", LibC.SYS_ioctl, inTask, (long)Tty.TIOCSPGRP, (long)scratch.Put(pgrp));
                }
            }
            finally
            {
                t.Call(Code, LibC.SYS_close, inTask);
                // In a new pid namespace the task's way to crisp is the fd it inherited: the files step closes it.
                if (_c.SelfPidfd < 0) ForgetCrispPidfd(leader, t);
            }
            Log.D($"restore: pty {index} is again the controlling terminal of session {info.Sid} (foreground group {info.Pgrp})");
        }
        finally { LibC.close(slave); }
    }

    /// <summary>A /dev/tty description: opened by the process, whose session has its terminal again.</summary>
    private void PlaceCtty(RestoreTask t, FileEntry file, int fd, bool cloexec)
    {
        var scratch = new Scratch(this, t.Pid);
        int flags = ((int)file.Tty.Flags & (LibC.O_ACCMODE | LibC.O_NONBLOCK | LibC.O_APPEND)) | LibC.O_NOCTTY;
        long r = t.Call(Code, LibC.SYS_openat, -100, (long)scratch.PutString("/dev/tty"), flags, 0);
        if (r < 0) throw new CrispException($"fd {fd} of {t} was /dev/tty, but its session has no controlling terminal here: openat(/dev/tty): {Errno.Name((int)-r)}");
        int tmp = (int)r;
        MoveFd(t, tmp, fd, cloexec);
    }

    private TermiosEntry CheckedTermios(TermiosEntry e, string where) =>
        e.CCc.Count >= Tty.Nccs ? e : throw new ImageException(_c.Dir.PathOf(ImageDir.TtyInfoName), $"{where}: termios with {e.CCc.Count} control characters, {Tty.Nccs} expected");

    private Tty.Termios FromEntry(TermiosEntry e, string where)
    {
        CheckedTermios(e, where);
        return new Tty.Termios(e.CIflag, e.COflag, e.CCflag, e.CLflag, (byte)e.CLine, e.CCc.Take(Tty.Nccs).Select(c => (byte)c).ToArray());
    }
}
