using Crisp.Checkpoint.Cpu;
using System.Buffers.Binary;
using System.Runtime.Intrinsics.X86;
using Crisp.Images;
using Crisp.Images.Proto;
using Crisp.Inject;
using Crisp.Native;

namespace Crisp.Checkpoint.Restore;

/// <summary>The fd table: each dumped fd recreated in its task, in CRIU's image order, then its owner and flags.</summary>
internal sealed unsafe partial class RestoreSession
{
    // ---- files ----------------------------------------------------------------------

    private static bool IsTerminal(string path) =>
        path.StartsWith("/dev/pts/", StringComparison.Ordinal) || path == "/dev/tty" || path == "/dev/console" ||
        (path.StartsWith("/dev/tty", StringComparison.Ordinal) && path.Length > 8);

    private int? InheritedFor(string key)
    {
        foreach (var k in new[] { key, key.TrimStart('/'), "/" + key })
            if (_o.InheritFds.TryGetValue(k, out var crispFd))
                return _c.ExtraBase + _c.ExtraCrispFds.IndexOf(crispFd);
        return null;
    }

    private void RestoreFiles(ProcessImage p, RestoreTask t)
    {
        // Nothing of the stub's fds stays, except the inherited ones at _c.ExtraBase...
        int extraEnd = _c.ExtraBase + _c.ExtraCrispFds.Count;
        t.Check(Code, "close_range", LibC.SYS_close_range, 0, _c.ExtraBase - 1, 0);
        t.Check(Code, "close_range", LibC.SYS_close_range, extraEnd, uint.MaxValue, 0);

        var placed = new Dictionary<uint, int>();              // file id → first fd holding it
        var pipes = new Dictionary<uint, (int R, int W)>();     // pipe_id → temporary ends in the task
        var pipeData = _c.Dir.ReadPipesData().ToDictionary(d => d.Entry.PipeId);
        var epolls = new List<(EventpollFileEntry, int)>();      // epolls this process made, filled at the end
        foreach (var fdi in p.Fds.OrderBy(f => f.Fd))
        {
            int fd = (int)fdi.Fd;
            bool cloexec = (fdi.Flags & LibC.FD_CLOEXEC) != 0;
            if (placed.TryGetValue(fdi.Id, out var first))
            {
                Dup(t, first, fd, cloexec);
                continue;
            }
            if (!_c.Files.TryGetValue(fdi.Id, out var file))
                throw new ImageException(_c.Dir.PathOf(ImageDir.FilesName), $"fd {fd}: no file with id {fdi.Id}");
            if (PlaceShared(p, t, file, fd, cloexec))
            {
                placed[fdi.Id] = fd;
                // The first process to use this end of a shared pipe: it came from crisp's copy, as made.
                if (file.Type == FdTypes.Pipe && _c.ConfiguredFiles.Add(fdi.Id))
                {
                    int fl = (int)file.Pipe.Flags & (LibC.O_NONBLOCK | LibC.O_DIRECT | O_ASYNC);
                    if (fl != 0) t.Check(Code, "fcntl(F_SETFL)", LibC.SYS_fcntl, fd, LibC.F_SETFL, fl);
                    RestoreOwner(t, fd, file.Pipe.Fown);
                }
                // A pty description crisp made (RestoreTtys.cs): its owner is the process's business.
                if (file.Type == FdTypes.Tty && _c.ConfiguredFiles.Add(fdi.Id)) RestoreOwner(t, fd, file.Tty?.Fown);
                continue;
            }
            switch (file.Type)
            {
                case FdTypes.Reg:
                    PlaceRegular(t, file.Reg, fd, cloexec);
                    break;
                case FdTypes.Fifo:
                    PlaceFifo(t, file.Fifo, fd, cloexec);
                    break;
                case FdTypes.Pipe:
                    PlacePipe(p, t, file.Pipe, fd, cloexec, pipes, pipeData);
                    break;
                case var kind when IsEventFile(kind):
                    PlaceEventFile(p, t, file, fd, cloexec);
                    if (kind == FdTypes.Eventpoll) epolls.Add((file.Epfd, fd));
                    break;
                case FdTypes.Pidfd:
                    PlacePidfd(p, t, file, fd, cloexec);
                    break;
                case FdTypes.Ns:
                    PlaceNamespaceFile(p, t, file, fd, cloexec);
                    break;
                case FdTypes.Tty when IsCtty(file):
                    PlaceCtty(t, file, fd, cloexec);
                    break;
                case FdTypes.Tty when _o.ShellJob:
                    Dup(t, _c.ExtraBase + _c.ExtraCrispFds.Count - 3 + 1, fd, cloexec);
                    break;
                default:
                    throw new CrispException($"process {p.Pid}: fd {fd} is a {file.Type} file, which crisp cannot restore yet" +
                                             (file.Type == FdTypes.Tty ? " (a terminal: use -j/--shell-job)" : ""));
            }
            placed[fdi.Id] = fd;
            if (_c.ConfiguredFiles.Add(fdi.Id))
                RestoreOwner(t, fd, file.Type switch { FdTypes.Reg => file.Reg?.Fown, FdTypes.Pipe => file.Pipe?.Fown, FdTypes.Pidfd => file.Pidfd?.Fown, FdTypes.Tty => file.Tty?.Fown,
                    FdTypes.Fifo => _c.Files.GetValueOrDefault(file.Fifo?.RegfId ?? 0)?.Reg?.Fown, _ => null });
            KeepShared(t, file, fd);
        }
        RegisterEpolls(t, epolls);
        ForgetCrispPidfd(p, t);
        foreach (var (r, w) in pipes.Values)
        {
            if (r >= 0) t.Call(Code, LibC.SYS_close, r);
            if (w >= 0) t.Call(Code, LibC.SYS_close, w);
        }
        if (_c.ExtraCrispFds.Count > 0) t.Check(Code, "close_range", LibC.SYS_close_range, _c.ExtraBase, extraEnd - 1, 0);
    }

    private const int F_SETOWN_EX = 15, O_ASYNC = 0x2000;

    /// <summary>
    /// LibC.F_SETSIG and F_SETOWN_EX as dumped. The kernel records the caller's uid and euid with the
    /// owner (they decide whether the signal may be sent), so the owner is set with the dumped
    /// ones: setresuid around the call, with SECURE_NO_SETUID_FIXUP so the task keeps its
    /// capabilities for the way back (the creds step sets the dumped securebits later).
    /// </summary>
    private void RestoreOwner(RestoreTask t, int fd, FownEntry? fown)
    {
        if (fown == null) return;
        if (fown.Signum != 0) t.Check(Code, $"fcntl(fd {fd}, F_SETSIG, {fown.Signum})", LibC.SYS_fcntl, fd, LibC.F_SETSIG, fown.Signum);
        if (fown.Pid == 0) return;
        var scratch = new Scratch(this, t.Pid);
        Span<byte> owner = stackalloc byte[8];
        BinaryPrimitives.WriteUInt32LittleEndian(owner, fown.PidType);
        BinaryPrimitives.WriteUInt32LittleEndian(owner[4..], fown.Pid);
        ulong at = scratch.Put(owner);
        bool asRoot = fown.Uid == 0 && fown.Euid == 0;
        if (!asRoot)
        {
            t.Check(Code, "prctl(PR_SET_SECUREBITS, SECURE_NO_SETUID_FIXUP)", LibC.SYS_prctl, LibC.PR_SET_SECUREBITS, 1 << SECURE_NO_SETUID_FIXUP);
            t.Check(Code, $"setresuid({fown.Uid}, {fown.Euid}, -1) for the owner of fd {fd}", LibC.SYS_setresuid, fown.Uid, fown.Euid, uint.MaxValue);
        }
        long r = t.Call(Code, LibC.SYS_fcntl, fd, F_SETOWN_EX, (long)at);
        if (!asRoot) t.Check(Code, "setresuid(0, 0, -1) back", LibC.SYS_setresuid, 0, 0, uint.MaxValue);
        Errno.CheckRaw(r, $"fcntl(fd {fd}, F_SETOWN_EX, type {fown.PidType} pid {fown.Pid})", t.ToString());
    }

    private void Dup(RestoreTask t, int from, int to, bool cloexec)
    {
        if (from == to)
        {
            t.Check(Code, "fcntl(F_SETFD)", LibC.SYS_fcntl, to, LibC.F_SETFD, cloexec ? LibC.FD_CLOEXEC : 0);
            return;
        }
        t.Check(Code, $"dup3 {from} → {to}", SYS_dup3, from, to, cloexec ? LibC.O_CLOEXEC : 0);
    }

    /// <summary>What the task opened at <paramref name="tmp"/> goes to <paramref name="fd"/>; close-on-exec set when asked.</summary>
    private void MoveFd(RestoreTask t, int tmp, int fd, bool cloexec)
    {
        if (tmp != fd)
        {
            Dup(t, tmp, fd, cloexec);
            t.Call(Code, LibC.SYS_close, tmp);
        }
        else if (cloexec) Dup(t, fd, fd, true);
    }

    private void PlaceRegular(RestoreTask t, RegFileEntry reg, int fd, bool cloexec)
    {
        var inherited = InheritedFor(reg.Name);
        if (inherited is int src) { Dup(t, src, fd, cloexec); return; }
        if (_o.ShellJob && IsTerminal(reg.Name))
        {
            int acc = (int)reg.Flags & LibC.O_ACCMODE;
            int stdio = acc == LibC.O_RDONLY ? 0 : 1;
            Dup(t, _c.ExtraBase + _c.ExtraCrispFds.Count - 3 + stdio, fd, cloexec);
            return;
        }
        if (!File.Exists(reg.Name) && !Directory.Exists(reg.Name))
            throw new CrispException($"file {reg.Name} is gone (fd {fd} of {t})");
        int flags = ((int)reg.Flags & ~(LibC.O_CREAT | LibC.O_EXCL | LibC.O_TRUNC)) | LibC.O_NOCTTY;
        // A file made with O_TMPFILE keeps those bits in its flags; it is reopened as the file it is.
        const int __O_TMPFILE = 0x400000;
        if ((flags & __O_TMPFILE) != 0) flags &= ~(__O_TMPFILE | LibC.O_DIRECTORY);
        var scratch = new Scratch(this, t.Pid);
        int tmp = (int)t.Check(Code, $"openat {reg.Name}", LibC.SYS_openat, -100, (long)scratch.PutString(reg.Name), flags, 0);
        MoveFd(t, tmp, fd, cloexec);
        // open(2) ignores O_ASYNC: only F_SETFL turns on SIGIO delivery (the file's fasync).
        if (((int)reg.Flags & O_ASYNC) != 0)
            t.Check(Code, "fcntl(F_SETFL, O_ASYNC)", LibC.SYS_fcntl, fd, LibC.F_SETFL, (int)reg.Flags & (LibC.O_NONBLOCK | LibC.O_APPEND | LibC.O_DIRECT | LibC.O_NOATIME | O_ASYNC));
        if (reg.Pos != 0)
        {
            long r = t.Call(Code, LibC.SYS_lseek, fd, (long)reg.Pos, LibC.SEEK_SET);
            if (r < 0 && r != -Errno.ESPIPE) Errno.CheckRaw(r, "lseek", $"{reg.Name} in {t}");
        }
    }

    private void PlacePipe(ProcessImage p, RestoreTask t, PipeEntry pipe, int fd, bool cloexec,
        Dictionary<uint, (int R, int W)> pipes, Dictionary<uint, PipeData> data)
    {
        var inherited = InheritedFor($"pipe:[{pipe.PipeId}]");
        if (inherited is int src) { Dup(t, src, fd, cloexec); return; }
        if (!pipes.TryGetValue(pipe.PipeId, out var ends))
        {
            var scratch = new Scratch(this, t.Pid);
            ulong at = scratch.Reserve(8);
            t.Check(Code, "pipe2", LibC.SYS_pipe2, (long)at, LibC.O_CLOEXEC);
            Span<byte> two = stackalloc byte[8];
            RemoteMemory.Read(t.Pid, at, two);
            ends = (BinaryPrimitives.ReadInt32LittleEndian(two), BinaryPrimitives.ReadInt32LittleEndian(two[4..]));
            // Move the ends above every fd number the process uses, so later placements cannot hit them.
            // F_DUPFD, not dup3 to fixed numbers: pipe2 may have returned one of those (a bash tree
            // did: dup3 onto the write end closed it).
            int hi = _c.ExtraBase + _c.ExtraCrispFds.Count + 2 * pipes.Count;
            int rEnd = (int)t.Check(Code, "fcntl(F_DUPFD_CLOEXEC)", LibC.SYS_fcntl, ends.R, LibC.F_DUPFD_CLOEXEC, hi);
            int wEnd = (int)t.Check(Code, "fcntl(F_DUPFD_CLOEXEC)", LibC.SYS_fcntl, ends.W, LibC.F_DUPFD_CLOEXEC, hi);
            t.Call(Code, LibC.SYS_close, ends.R);
            t.Call(Code, LibC.SYS_close, ends.W);
            ends = (rEnd, wEnd);
            pipes[pipe.PipeId] = ends;
            KeepSharedPipe(t, pipe.PipeId, ends.R, ends.W);
            if (data.TryGetValue(pipe.PipeId, out var d) && (d.Data.Length > 0 || d.Entry.HasSize))
            {
                // The dumped size (F_GETPIPE_SZ), larger or smaller than the default; older images without one: room for the data.
                if (d.Entry.HasSize && d.Entry.Size != 65536 || d.Data.Length > 65536)
                    t.Check(Code, "fcntl(F_SETPIPE_SZ)", LibC.SYS_fcntl, ends.W, LibC.F_SETPIPE_SZ,
                        d.Entry.HasSize ? Math.Max(d.Data.Length, (int)d.Entry.Size) : d.Data.Length);
                int off = 0;
                while (off < d.Data.Length)
                {
                    // Whole pages per write: a write's partial last page is not topped up by the next
                    // write, so odd chunks would use more pipe slots than the data needs and a full
                    // pipe would block the write (zdtm pipe03: 1 MiB in a pipe of 1 MiB).
                    int n = Math.Min(d.Data.Length - off, (CtlSize - ScratchOffset - 64) & ~(LibC.PageSize - 1));
                    var sc = new Scratch(this, t.Pid);
                    ulong buf = sc.Put(d.Data.AsSpan(off, n));
                    long w = t.Check(Code, "write pipe data", LibC.SYS_write, ends.W, (long)buf, n);
                    off += (int)w;
                }
            }
        }
        bool readEnd = ((int)pipe.Flags & LibC.O_ACCMODE) == LibC.O_RDONLY;
        int end = readEnd ? ends.R : ends.W;
        if (OwnsPipeEnd(pipe)) Dup(t, end, fd, cloexec);
        else
        {
            // A description of its own (SharedFiles.cs, OwnsPipeEnd): a reopen of the end.
            var sc = new Scratch(this, t.Pid);
            int tmp = (int)t.Check(Code, $"open /proc/self/fd/{end} (pipe:[{pipe.PipeId}])", LibC.SYS_openat, -100,
                (long)sc.PutString($"/proc/self/fd/{end}"), (readEnd ? LibC.O_RDONLY : LibC.O_WRONLY) | LibC.O_CLOEXEC, 0);
            Dup(t, tmp, fd, cloexec);
            if (tmp != fd) t.Call(Code, LibC.SYS_close, tmp);
        }
        int fl = (int)pipe.Flags & (LibC.O_NONBLOCK | LibC.O_DIRECT | O_ASYNC);
        if (fl != 0) t.Check(Code, "fcntl(F_SETFL)", LibC.SYS_fcntl, fd, LibC.F_SETFL, fl);
    }
}
