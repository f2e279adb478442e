using System.Globalization;
using System.Text.RegularExpressions;
using Crisp.Images.Proto;
using Crisp.Native;
using Crisp.Native.ProcFs;

namespace Crisp.Checkpoint.Dump;

/// <summary>
/// The anon-inode files an event loop holds: eventfd, epoll, signalfd, timerfd and inotify.
/// Their whole state is in /proc/PID/fdinfo/N (the kernel prints it there for checkpointing);
/// nothing has to run inside the task. Two facts need more than fdinfo:
/// - an epoll registration names its target by fd number, and that number may since have been
///   closed or reused; kcmp(KCMP_EPOLL_TFD) proves the fd still holds the registered file, and a
///   registration whose file is no longer at its fd is refused (restore could not find it).
/// - an inotify watch names its inode by file handle; crisp turns the handle into a path now
///   (open_by_handle_at on the inode's mount), so that a restore on another machine can use it.
/// </summary>
internal sealed unsafe partial class FileTable
{
    private const int KCMP_EPOLL_TFD = 7;

    private static FdTypes? AnonKind(string link) => link switch
    {
        "anon_inode:[eventfd]" => FdTypes.Eventfd,
        "anon_inode:[eventpoll]" => FdTypes.Eventpoll,
        "anon_inode:[signalfd]" => FdTypes.Signalfd,
        "anon_inode:[timerfd]" => FdTypes.Timerfd,
        "anon_inode:inotify" => FdTypes.Inotify,
        "anon_inode:[fanotify]" => FdTypes.Fanotify,
        _ => null,
    };

    private static FileEntry CollectAnon(FdTypes kind, uint id, int pid, int pidfd, int fd, int flags, FdInfo info, int targetsOf = 0)
    {
        // An epoll in flight (FileTable.InFlight.cs) is crisp's fd: its targets are the fds of the process it is restored in.
        int owner = targetsOf != 0 ? targetsOf : pid;
        string where = $"process {pid}: fd {fd}";
        var f = info.Fields;
        string Field(string key) => f.TryGetValue(key, out var v) ? v
            : throw new CrispException($"{where} is a {kind} whose fdinfo has no '{key}' line (kernel too old?)");
        switch (kind)
        {
            case FdTypes.Eventfd:
                bool semaphore = f.TryGetValue("eventfd-semaphore", out var sem) && sem.Trim() == "1";
                return new FileEntry
                {
                    Type = kind, Id = id,
                    Efd = new EventfdFileEntry
                    {
                        Id = id, Flags = (uint)(flags | (semaphore ? LibC.EFD_SEMAPHORE : 0)), Fown = NoOwner(),
                        Counter = ulong.Parse(Field("eventfd-count"), NumberStyles.HexNumber, CultureInfo.InvariantCulture),
                    },
                };
            case FdTypes.Signalfd:
                return new FileEntry
                {
                    Type = kind, Id = id,
                    Sgfd = new SignalfdEntry
                    {
                        Id = id, Flags = (uint)flags, Fown = NoOwner(),
                        Sigmask = ulong.Parse(Field("sigmask"), NumberStyles.HexNumber, CultureInfo.InvariantCulture),
                    },
                };
            case FdTypes.Timerfd:
            {
                var (vs, vns) = TimeSpecPair(Field("it_value"), where);
                var (isec, ins) = TimeSpecPair(Field("it_interval"), where);
                ulong ticks = ulong.Parse(Field("ticks"), CultureInfo.InvariantCulture);
                if (vs == 0 && vns == 0 && (isec != 0 || ins != 0))
                    (vs, vns, ticks) = ForwardPeriodicTimer(pidfd, fd, where);
                return new FileEntry
                {
                    Type = kind, Id = id,
                    Tfd = new TimerfdEntry
                    {
                        Id = id, Flags = (uint)flags, Fown = NoOwner(),
                        Clockid = uint.Parse(Field("clockid"), CultureInfo.InvariantCulture),
                        Ticks = ticks,
                        SettimeFlags = Convert.ToUInt32(Field("settime flags"), 8),
                        Vsec = vs, Vnsec = vns, Isec = isec, Insec = ins,
                    },
                };
            }
            case FdTypes.Eventpoll:
            {
                var e = new EventpollFileEntry { Id = id, Flags = (uint)flags, Fown = NoOwner() };
                if (f.TryGetValue("tfd", out var lines))
                {
                    var toffs = new Dictionary<uint, uint>();      // registrations seen so far under each fd number
                    var holders = new Lazy<Dictionary<ulong, List<int>>>(() => FdsByInode(owner));
                    foreach (var line in lines.Split('\n'))
                    {
                        var t = Tokens("tfd:" + line);
                        var tfd = new EventpollTfdEntry
                        {
                            Id = id,
                            Tfd = uint.Parse(t["tfd"], CultureInfo.InvariantCulture),
                            Events = uint.Parse(t["events"], NumberStyles.HexNumber, CultureInfo.InvariantCulture),
                            Data = ulong.Parse(t["data"], NumberStyles.HexNumber, CultureInfo.InvariantCulture),
                            Dev = uint.Parse(t["sdev"], NumberStyles.HexNumber, CultureInfo.InvariantCulture),
                            Inode = ulong.Parse(t["ino"], NumberStyles.HexNumber, CultureInfo.InvariantCulture),
                            Pos = ulong.Parse(t["pos"], CultureInfo.InvariantCulture),
                        };
                        // fdinfo lists registrations in the kernel's (file, fd) order, as kcmp counts toff.
                        uint toff = toffs.TryGetValue(tfd.Tfd, out var n) ? n : 0;
                        toffs[tfd.Tfd] = toff + 1;
                        tfd.Tfd = (uint)EpollTargetFd(pid, owner, fd, (int)tfd.Tfd, toff, tfd.Inode, holders, where);
                        e.Tfd.Add(tfd);
                    }
                    var numbers = new HashSet<uint>();
                    foreach (var r in e.Tfd)
                        if (!numbers.Add(r.Tfd))
                            throw new CrispException($"{where} is an epoll with two registrations that only fd {r.Tfd} holds now (the file was registered under two numbers): not supported yet");
                }
                return new FileEntry { Type = kind, Id = id, Epfd = e };
            }
            case FdTypes.Inotify:
            {
                var e = new InotifyFileEntry { Id = id, Flags = (uint)flags, Fown = NoOwner() };
                if (f.TryGetValue("inotify wd", out var lines))
                    foreach (var line in lines.Split('\n'))
                        e.Wd.Add(InotifyWatch(id, Tokens("wd:" + line), where));
                return new FileEntry { Type = kind, Id = id, Ify = e };
            }
            case FdTypes.Fanotify:
                return new FileEntry { Type = kind, Id = id, Ffy = Fanotify(id, flags, f, where) };
            default:
                throw new InvalidOperationException($"{where}: {kind} is not an anon-inode kind");
        }
    }

    /// <summary>
    /// A periodic timer that expired and was not read yet shows it_value 0 in fdinfo: the kernel
    /// moves it to its next period only when it is read or asked. timerfd_gettime asks (it counts
    /// the missed periods into ticks, as a read would see them), so crisp asks on its own copy.
    /// </summary>
    private static (ulong Sec, ulong Nsec, ulong Ticks) ForwardPeriodicTimer(int pidfd, int fd, string where)
    {
        const long SYS_timerfd_gettime = 287;
        int local = Errno.Check(LibC.pidfd_getfd(pidfd, fd), "pidfd_getfd", where);
        try
        {
            long* its = stackalloc long[4];
            Errno.Check(LibC.Syscall(SYS_timerfd_gettime, local, (long)its), "timerfd_gettime", where);
            var after = Proc.FdInfo(Environment.ProcessId, local);
            return ((ulong)its[2], (ulong)its[3], ulong.Parse(after.Fields["ticks"], CultureInfo.InvariantCulture));
        }
        finally { LibC.close(local); }
    }

    private static (ulong Sec, ulong Nsec) TimeSpecPair(string text, string where)
    {
        // "(1, 500000000)"
        var parts = text.Trim('(', ')', ' ').Split(',', StringSplitOptions.TrimEntries);
        if (parts.Length != 2) throw new CrispException($"{where}: unexpected timerfd time '{text}'");
        return (ulong.Parse(parts[0], CultureInfo.InvariantCulture), ulong.Parse(parts[1], CultureInfo.InvariantCulture));
    }

    [GeneratedRegex(@"([a-z_-]+):\s*(\S+)")]
    private static partial Regex TokenPattern();

    private static Dictionary<string, string> Tokens(string line)
    {
        var d = new Dictionary<string, string>();
        foreach (Match m in TokenPattern().Matches(line)) d[m.Groups[1].Value] = m.Groups[2].Value;
        return d;
    }

    /// <summary>
    /// The fd of <paramref name="pid"/> that holds the file registered in epoll
    /// <paramref name="epfd"/> as (<paramref name="tfd"/>, <paramref name="toff"/>): tfd itself
    /// while it still holds that file, else another fd holding it (the program closed the number
    /// it registered under but kept the file open elsewhere; restore registers it under that fd,
    /// as CRIU does). A file no fd holds any more is refused.
    /// </summary>
    private static int EpollTargetFd(int pid, int owner, int epfd, int tfd, uint toff, ulong ino,
        Lazy<Dictionary<ulong, List<int>>> holders, string where)
    {
        if (SameEpollTarget(pid, owner, epfd, tfd, toff, tfd)) return tfd;
        if (holders.Value.TryGetValue(ino, out var fds))
            foreach (int c in fds)
                if (c != tfd && SameEpollTarget(pid, owner, epfd, tfd, toff, c)) return c;
        throw new CrispException($"{where} is an epoll watching a file registered as fd {tfd} that no fd of the process holds any more: not supported");
    }

    /// <summary>Whether fd <paramref name="candidate"/> of <paramref name="owner"/> is registration (tfd, toff) of epoll fd <paramref name="epfd"/> of <paramref name="pid"/>.</summary>
    private static bool SameEpollTarget(int pid, int owner, int epfd, int tfd, uint toff, int candidate)
    {
        // struct kcmp_epoll_slot { __u32 efd, tfd, toff; }
        uint* slot = stackalloc uint[3];
        slot[0] = (uint)epfd; slot[1] = (uint)tfd; slot[2] = toff;
        long r = LibC.Syscall(LibC.SYS_kcmp, owner, pid, KCMP_EPOLL_TFD, candidate, (long)slot);
        if (r == 0) return true;
        if (r > 0 || Errno.Last is Errno.EBADF or Errno.ENOENT) return false;
        throw Errno.Failure("kcmp(KCMP_EPOLL_TFD)", $"{pid}, epoll fd {epfd}, target fd {tfd}/{toff}, candidate fd {candidate}");
    }

    private static Dictionary<ulong, List<int>> FdsByInode(int pid)
    {
        var map = new Dictionary<ulong, List<int>>();
        foreach (int fd in Proc.Fds(pid))
        {
            LibC.stat_t st;
            if (LibC.stat($"/proc/{pid}/fd/{fd}", &st) != 0) continue;
            if (!map.TryGetValue(st.st_ino, out var l)) map[st.st_ino] = l = [];
            l.Add(fd);
        }
        return map;
    }

    private static FanotifyFileEntry Fanotify(uint id, int flags, IReadOnlyDictionary<string, string> f, string where)
    {
        uint Hex(Dictionary<string, string> t, string k) => uint.Parse(t[k], NumberStyles.HexNumber, CultureInfo.InvariantCulture);
        if (!f.TryGetValue("fanotify flags", out var head))
            throw new CrispException($"{where} is a fanotify whose fdinfo has no 'fanotify flags' line");
        var h = Tokens("flags:" + head);
        var e = new FanotifyFileEntry { Id = id, Flags = (uint)flags, Fown = NoOwner(), Faflags = Hex(h, "flags"), Evflags = Hex(h, "event-flags") };
        if (f.ContainsKey("fanotify sdev"))
            throw new CrispException($"{where} is a fanotify with a filesystem mark (FAN_MARK_FILESYSTEM): not supported yet");
        if (f.TryGetValue("fanotify ino", out var inodes))
            foreach (var line in inodes.Split('\n'))
            {
                var t = Tokens("ino:" + line);
                var fh = FileHandle(t, where, out var handle, out int type);
                var m = new FanotifyMarkEntry
                {
                    Id = id, Type = MarkType.Inode, Mflags = Hex(t, "mflags"), Mask = Hex(t, "mask"), IgnoredMask = Hex(t, "ignored_mask"),
                    SDev = Hex(t, "sdev"),
                    Ie = new FanotifyInodeMarkEntry { IIno = ulong.Parse(t["ino"], NumberStyles.HexNumber, CultureInfo.InvariantCulture), FHandle = fh },
                };
                fh.Path = WatchedPath(m.SDev, m.Ie.IIno, type, handle, where)!;
                e.Mark.Add(m);
            }
        if (f.TryGetValue("fanotify mnt_id", out var mounts))
            foreach (var line in mounts.Split('\n'))
            {
                var t = Tokens("mnt_id:" + line);
                uint mnt = Hex(t, "mnt_id");
                string? point = File.ReadLines("/proc/self/mountinfo").Select(l => l.Split(' '))
                    .Where(p => p.Length > 4 && p[0] == mnt.ToString(CultureInfo.InvariantCulture)).Select(p => UnescapeMount(p[4])).FirstOrDefault();
                if (point == null)
                    throw new CrispException($"{where} is a fanotify marking mount {mnt}, which crisp's mount namespace does not show");
                e.Mark.Add(new FanotifyMarkEntry
                {
                    Id = id, Type = MarkType.Mount, Mflags = Hex(t, "mflags"), Mask = Hex(t, "mask"), IgnoredMask = Hex(t, "ignored_mask"),
                    SDev = 0, Me = new FanotifyMountMarkEntry { MntId = mnt, Path = point },
                });
            }
        return e;
    }

    /// <summary>fhandle-bytes, fhandle-type and f_handle of an fsnotify fdinfo line, as CRIU stores them.</summary>
    private static FhEntry FileHandle(Dictionary<string, string> t, string where, out byte[] handle, out int type)
    {
        uint bytes = uint.Parse(t["fhandle-bytes"], NumberStyles.HexNumber, CultureInfo.InvariantCulture);
        type = (int)uint.Parse(t["fhandle-type"], NumberStyles.HexNumber, CultureInfo.InvariantCulture);
        handle = Convert.FromHexString(t["f_handle"]);
        if (handle.Length != bytes) throw new CrispException($"{where}: file handle of {bytes} bytes printed as {t["f_handle"]}");
        var fh = new FhEntry { Bytes = bytes, Type = (uint)type };
        var padded = new byte[Math.Max(128, (handle.Length + 7) / 8 * 8)];
        handle.CopyTo(padded, 0);
        for (int i = 0; i < padded.Length; i += 8) fh.Handle.Add(BitConverter.ToUInt64(padded, i));
        return fh;
    }

    private static InotifyWdEntry InotifyWatch(uint id, Dictionary<string, string> t, string where)
    {
        uint Hex(string k) => uint.Parse(t[k], NumberStyles.HexNumber, CultureInfo.InvariantCulture);
        uint bytes = Hex("fhandle-bytes");
        int type = (int)Hex("fhandle-type");
        string hex = t["f_handle"];
        var handle = Convert.FromHexString(hex);
        if (handle.Length != bytes) throw new CrispException($"{where}: inotify handle of {bytes} bytes printed as {hex}");
        var w = new InotifyWdEntry
        {
            Id = id,
            Wd = Hex("wd"),
            IIno = ulong.Parse(t["ino"], NumberStyles.HexNumber, CultureInfo.InvariantCulture),
            SDev = Hex("sdev"),
            Mask = Hex("mask"),
            IgnoredMask = Hex("ignored_mask"),
            FHandle = new FhEntry { Bytes = bytes, Type = (uint)type },
        };
        var padded = new byte[Math.Max(128, (handle.Length + 7) / 8 * 8)];
        handle.CopyTo(padded, 0);
        for (int i = 0; i < padded.Length; i += 8) w.FHandle.Handle.Add(BitConverter.ToUInt64(padded, i));
        // A watched inode that is deleted gets no path: FileTable.GhostWatches.cs finds it among the ghosts.
        if (WatchedPath(w.SDev, w.IIno, type, handle, where, deletedOk: true) is string path) w.FHandle.Path = path;
        return w;
    }

    /// <summary>The path of a watched inode now, through its file handle on the inode's mount.</summary>
    private static string? WatchedPath(uint sdev, ulong ino, int handleType, byte[] handle, string where, bool deletedOk = false)
    {
        uint major = sdev >> 20, minor = sdev & 0xfffff;
        string? mountPoint = null;
        foreach (var line in File.ReadLines("/proc/self/mountinfo"))
        {
            var p = line.Split(' ');
            if (p.Length > 4 && p[2] == $"{major}:{minor}") { mountPoint = UnescapeMount(p[4]); break; }
        }
        if (mountPoint == null)
            throw new CrispException($"{where} is an inotify watching inode {ino} of device {major}:{minor}, which no mount shows");
        int mfd = Errno.Check(LibC.open(mountPoint, LibC.O_RDONLY | LibC.O_DIRECTORY | LibC.O_CLOEXEC, 0), "open", mountPoint);
        var fh = new byte[8 + handle.Length];
        BitConverter.TryWriteBytes(fh.AsSpan(0, 4), (uint)handle.Length);
        BitConverter.TryWriteBytes(fh.AsSpan(4, 4), handleType);
        handle.CopyTo(fh, 8);
        try
        {
            int target;
            fixed (byte* h = fh)
                target = (int)LibC.Syscall(LibC.SYS_open_by_handle_at, mfd, (long)h, LibC.O_PATH | LibC.O_CLOEXEC);
            if (target < 0)
            {
                if (Errno.Last == 116) // ESTALE
                    throw new CrispException($"{where} is an inotify watching inode {ino} on {mountPoint}, which is deleted: not supported yet");
                throw Errno.Failure("open_by_handle_at", $"inode {ino} on {mountPoint} ({where})");
            }
            try
            {
                string path = LibC.ReadLink($"/proc/self/fd/{target}");
                if (deletedOk && path.StartsWith('/') && path.EndsWith(" (deleted)", StringComparison.Ordinal)) return null;
                if (!path.StartsWith('/') || path.EndsWith(" (deleted)", StringComparison.Ordinal))
                    throw new CrispException($"{where} is an inotify watching {path}, which has no path: not supported yet");
                return path;
            }
            finally { LibC.close(target); }
        }
        finally { LibC.close(mfd); }
    }

    private static string UnescapeMount(string s) => Regex.Replace(s, @"\\([0-7]{3})", m => ((char)Convert.ToInt32(m.Groups[1].Value, 8)).ToString());
}
