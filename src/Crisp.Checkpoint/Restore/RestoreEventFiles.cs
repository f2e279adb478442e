using System.Buffers.Binary;
using Crisp.Images.Proto;
using Crisp.Inject;
using Crisp.Native;

namespace Crisp.Checkpoint.Restore;

/// <summary>
/// eventfd, signalfd, timerfd, inotify and epoll descriptions.
///
/// Their state belongs to the open file description, not to the process that made it, so crisp
/// makes each one itself, with its state (counter, mask, armed timer and ticks, watches with their
/// wd numbers), and the task takes it with pidfd_getfd exactly as it takes a description shared
/// with an earlier process (SharedFiles.cs): crisp's copy stays until every process has its files,
/// so a description shared by several processes stays one.
///
/// An epoll registration is the exception: the kernel keys it by (file, fd number) in the task
/// that registered it, and a later epoll_ctl(MOD/DEL) from the program finds it by that number.
/// So the epoll is made empty here, and its registrations are added by epoll_ctl injected into
/// the task once every fd of the task is in place (the watched files, other epolls included).
/// </summary>
internal sealed unsafe partial class RestoreSession
{
    private const long SYS_signalfd4 = 289, SYS_eventfd2 = 290, SYS_epoll_create1 = 291, SYS_epoll_ctl = 233, SYS_timerfd_create = 283, SYS_timerfd_settime = 286, SYS_inotify_init1 = 294, SYS_inotify_add_watch = 254;
    private const int TFD_TIMER_ABSTIME = 1, EPOLL_CTL_ADD = 1;
    private const uint TFD_IOC_SET_TICKS = 0x40085400, INOTIFY_IOC_SETNEXTWD = 0x40044900;

    private static bool IsEventFile(FdTypes t) =>
        t is FdTypes.Eventfd or FdTypes.Eventpoll or FdTypes.Signalfd or FdTypes.Timerfd or FdTypes.Inotify or FdTypes.Fanotify or FdTypes.Memfd;

    /// <summary>Makes the description in crisp and places it at <paramref name="fd"/> of <paramref name="t"/>.</summary>
    private void PlaceEventFile(ProcessImage p, RestoreTask t, FileEntry file, int fd, bool cloexec)
    {
        string what = $"{file.Type} for fd {fd} of {t}";
        int local = file.Type switch
        {
            FdTypes.Eventfd => MakeEventfd(file.Efd, what),
            FdTypes.Signalfd => MakeSignalfd(file.Sgfd, what),
            FdTypes.Timerfd => MakeTimerfd(file.Tfd, what),
            FdTypes.Inotify => MakeInotify(file.Ify, what),
            FdTypes.Memfd => OpenMemfd(file.Memfd, what),
            FdTypes.Fanotify => MakeFanotify(file.Ffy, what),
            FdTypes.Eventpoll => Made(LibC.Syscall(SYS_epoll_create1, LibC.O_CLOEXEC), "epoll_create1", what, file.Epfd.Flags),
            _ => throw new InvalidOperationException(what),
        };
        _c.CrispCopies[file.Id] = local;
        PlaceShared(p, t, file, fd, cloexec);
    }

    /// <summary>The fd of a just-made description, with the status flags of the image (O_NONBLOCK).</summary>
    private static int Made(long rc, string call, string what, uint flags)
    {
        int fd = (int)Errno.Check(rc, call, what);
        if ((flags & LibC.O_NONBLOCK) != 0 && LibC.fcntl(fd, LibC.F_SETFL, LibC.O_NONBLOCK) < 0)
        {
            var e = Errno.Failure("fcntl(F_SETFL)", what);
            LibC.close(fd);
            throw e;
        }
        return fd;
    }

    private static int MakeEventfd(EventfdFileEntry e, string what)
    {
        // Bit 0 of flags is crisp's LibC.EFD_SEMAPHORE mark (see eventfd.proto).
        int fd = Made(LibC.Syscall(SYS_eventfd2, 0, LibC.O_CLOEXEC | ((e.Flags & LibC.EFD_SEMAPHORE) != 0 ? LibC.EFD_SEMAPHORE : 0)),
            "eventfd2", what, e.Flags);
        try
        {
            if (e.Counter != 0)
            {
                ulong v = e.Counter;
                Errno.Check(LibC.write(fd, &v, 8), "write(eventfd counter)", what);
            }
            return fd;
        }
        catch { LibC.close(fd); throw; }
    }

    private static int MakeSignalfd(SignalfdEntry s, string what)
    {
        ulong mask = s.Sigmask;
        return Made(LibC.Syscall(SYS_signalfd4, -1, (long)&mask, 8, LibC.O_CLOEXEC), "signalfd4", what, s.Flags);
    }

    private static int MakeTimerfd(TimerfdEntry e, string what)
    {
        int fd = Made(LibC.Syscall(SYS_timerfd_create, e.Clockid, LibC.O_CLOEXEC), $"timerfd_create(clock {e.Clockid})", what, e.Flags);
        try
        {
            if (e.Vsec != 0 || e.Vnsec != 0)
            {
                // struct itimerspec { it_interval, it_value }
                long* its = stackalloc long[4];
                its[0] = (long)e.Isec; its[1] = (long)e.Insec;
                its[2] = (long)e.Vsec; its[3] = (long)e.Vnsec;
                if ((e.SettimeFlags & TFD_TIMER_ABSTIME) != 0)
                {
                    // The image holds the time left: an absolute timer is re-armed absolute, due that long from now.
                    long* now = stackalloc long[2];
                    Errno.Check(LibC.Syscall(LibC.SYS_clock_gettime, e.Clockid, (long)now), "clock_gettime", what);
                    long ns = now[1] + its[3];
                    its[2] += now[0] + ns / 1_000_000_000;
                    its[3] = ns % 1_000_000_000;
                }
                Errno.Check(LibC.Syscall(SYS_timerfd_settime, fd, e.SettimeFlags, (long)its, 0), "timerfd_settime", what);
            }
            if (e.Ticks != 0)
            {
                ulong ticks = e.Ticks;
                Errno.Check(LibC.Syscall(LibC.SYS_ioctl, fd, TFD_IOC_SET_TICKS, (long)&ticks), "ioctl(TFD_IOC_SET_TICKS)", what);
            }
            return fd;
        }
        catch { LibC.close(fd); throw; }
    }

    private int MakeInotify(InotifyFileEntry e, string what)
    {
        int fd = Made(LibC.Syscall(SYS_inotify_init1, LibC.O_CLOEXEC), "inotify_init1", what, e.Flags);
        try
        {
            foreach (var w in e.Wd.OrderBy(w => w.Wd))
            {
                string path = WatchTarget(w.FHandle, w.IIno, w.SDev, $"wd {w.Wd}", what, out int pathFd);
                try
                {
                    int wd = (int)w.Wd;
                    Errno.Check(LibC.Syscall(LibC.SYS_ioctl, fd, INOTIFY_IOC_SETNEXTWD, wd), "ioctl(INOTIFY_IOC_SETNEXTWD)", what);
                    byte[] p = System.Text.Encoding.UTF8.GetBytes(path + "\0");
                    long got;
                    fixed (byte* pp = p) got = LibC.Syscall(SYS_inotify_add_watch, fd, (long)pp, w.Mask);
                    Errno.Check(got, $"inotify_add_watch({path})", what);
                    if (got != wd)
                        throw new CrispException($"{what}: the watch on {path} came back as wd {got}, not {wd} (one inode watched twice?)");
                }
                finally { if (pathFd >= 0) LibC.close(pathFd); }
            }
            return fd;
        }
        catch { LibC.close(fd); throw; }
    }

    /// <summary>
    /// A path for the watched inode: the one recorded at dump if it is still that inode, otherwise
    /// the inode itself through its file handle (same machine, inode still there).
    /// </summary>
    private string WatchTarget(FhEntry fh, ulong ino, uint sdev, string label, string what, out int pathFd)
    {
        pathFd = -1;
        string? recorded = fh.HasPath ? fh.Path : null;
        LibC.stat_t st;
        if (recorded != null && LibC.stat(recorded, &st) == 0 && st.st_ino == ino) return recorded;
        // A watch on a deleted file: the ghost made for that inode (Dump/FileTable.GhostWatches.cs).
        if (recorded == null && _c.GhostInodes.TryGetValue(((uint)Dump.FileTable.UserDev(sdev), ino), out var ghost)) return ghost;

        var handle = new byte[fh.Bytes];
        var words = new byte[fh.Handle.Count * 8];
        for (int i = 0; i < fh.Handle.Count; i++) BinaryPrimitives.WriteUInt64LittleEndian(words.AsSpan(i * 8), fh.Handle[i]);
        if (words.Length >= handle.Length)
        {
            words.AsSpan(0, handle.Length).CopyTo(handle);
            uint major = sdev >> 20, minor = sdev & 0xfffff;
            foreach (var line in File.ReadLines("/proc/self/mountinfo"))
            {
                var f = line.Split(' ');
                if (f.Length <= 4 || f[2] != $"{major}:{minor}") continue;
                int mfd = LibC.open(f[4], LibC.O_RDONLY | LibC.O_DIRECTORY | LibC.O_CLOEXEC, 0);
                if (mfd < 0) continue;
                var raw = new byte[8 + handle.Length];
                BinaryPrimitives.WriteUInt32LittleEndian(raw, (uint)handle.Length);
                BinaryPrimitives.WriteInt32LittleEndian(raw.AsSpan(4), (int)fh.Type);
                handle.CopyTo(raw, 8);
                int target;
                fixed (byte* h = raw) target = (int)LibC.Syscall(LibC.SYS_open_by_handle_at, mfd, (long)h, LibC.O_PATH | LibC.O_CLOEXEC);
                LibC.close(mfd);
                if (target >= 0)
                {
                    pathFd = target;
                    return $"/proc/self/fd/{target}";
                }
                break;
            }
        }
        throw new CrispException($"{what}: the inode watched as {label} ({recorded ?? $"inode {ino}"}) is gone");
    }

    private const long SYS_fanotify_init = 300, SYS_fanotify_mark = 301;
    private const uint FAN_MARK_ADD = 0x1, FAN_MARK_MOUNT = 0x10, FAN_MARK_IGNORED_MASK = 0x20;

    private int MakeFanotify(FanotifyFileEntry e, string what)
    {
        // Not FAN_CLOEXEC: the group keeps its init flags and shows them in fdinfo. crisp's own fd
        // gets FD_CLOEXEC afterwards; the task's is set when it takes the description.
        int fd = Made(LibC.Syscall(SYS_fanotify_init, e.Faflags, e.Evflags), "fanotify_init", what, e.Flags);
        try
        {
            Errno.Check(LibC.fcntl(fd, LibC.F_SETFD, LibC.FD_CLOEXEC), "fcntl(F_SETFD)", what);
            foreach (var m in e.Mark)
            {
                int pathFd = -1;
                string path;
                uint kind = 0;
                if (m.Type == MarkType.Mount)
                {
                    path = m.Me.HasPath ? m.Me.Path : throw new CrispException($"{what}: mount mark {m.Me.MntId} has no path");
                    kind = FAN_MARK_MOUNT;
                }
                else path = WatchTarget(m.Ie.FHandle, m.Ie.IIno, m.SDev, "a fanotify mark", what, out pathFd);
                try
                {
                    byte[] p = System.Text.Encoding.UTF8.GetBytes(path + "\0");
                    fixed (byte* pp = p)
                    {
                        if (m.Mask != 0)
                            Errno.Check(LibC.Syscall(SYS_fanotify_mark, fd, FAN_MARK_ADD | kind, m.Mask, -100, (long)pp), $"fanotify_mark({path})", what);
                        if (m.IgnoredMask != 0)
                            Errno.Check(LibC.Syscall(SYS_fanotify_mark, fd, FAN_MARK_ADD | kind | FAN_MARK_IGNORED_MASK | m.Mflags, m.IgnoredMask, -100, (long)pp),
                                $"fanotify_mark({path}, ignored)", what);
                    }
                }
                finally { if (pathFd >= 0) LibC.close(pathFd); }
            }
            return fd;
        }
        catch { LibC.close(fd); throw; }
    }

    /// <summary>The registrations of the epolls this process made, now that all its fds are in place.</summary>
    private void RegisterEpolls(RestoreTask t, List<(EventpollFileEntry Epoll, int Fd)> epolls)
    {
        // struct epoll_event is packed on x86-64: u32 events, u64 data.
        Span<byte> ev = stackalloc byte[12];
        foreach (var (ep, epfd) in epolls)
            foreach (var r in ep.Tfd)
            {
                BinaryPrimitives.WriteUInt32LittleEndian(ev, r.Events);
                BinaryPrimitives.WriteUInt64LittleEndian(ev[4..], r.Data);
                var scratch = new Scratch(this, t.Pid);
                ulong at = scratch.Put(ev);
                t.Check(Code, $"epoll_ctl(ADD) of fd {r.Tfd} to epoll fd {epfd}", SYS_epoll_ctl, epfd, EPOLL_CTL_ADD, r.Tfd, (long)at);
            }
    }
}
