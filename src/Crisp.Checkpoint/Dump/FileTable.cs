using Crisp.Checkpoint.Sockets;
using Crisp.Images;
using Crisp.Images.Proto;
using Crisp.Native;
using Crisp.Native.ProcFs;

namespace Crisp.Checkpoint.Dump;

/// <summary>
/// files.img being built: every open file description once, whoever refers to it (fds of
/// any process in the tree, mapped files, cwd/root, the exe). Descriptors that are one
/// open file description (dup'd, or inherited over fork) share one entry, found with
/// kcmp(KCMP_FILE); restore then shares them again, offset and all.
/// </summary>
internal sealed unsafe partial class FileTable(bool extUnixSk = false, bool tcpClose = false, TcpRepairDump? tcp = null, bool skipInFlight = false)
{
    private readonly SocketDump _sockets = new(extUnixSk, tcpClose, tcp, skipInFlight);
    private readonly List<FileEntry> _files = [];
    private readonly Dictionary<(string, int), uint> _byPath = [];
    // For fds: (pid, fd, ino) of the first descriptor seen for each entry, to kcmp new ones against.
    private readonly List<(int Pid, int Fd, ulong Ino, uint Id)> _descriptors = [];
    private readonly List<PipeData> _pipeData = [];
    private readonly HashSet<uint> _pipesWithData = [];
    private readonly List<PipeData> _fifoData = [];
    private readonly HashSet<uint> _fifosWithData = [];

    public IReadOnlyList<FileEntry> Files => _files;
    public IReadOnlyList<PipeData> PipesData => _pipeData;
    public IReadOnlyList<PipeData> FifoData => _fifoData;
    public IReadOnlyList<SkPacket> SocketQueues => _sockets.Packets;

    /// <summary>Once every process was collected: checks socket peers, adds entries for external peers.</summary>
    public void FinishSockets()
    {
        try
        {
            DumpFilesInFlight();
            foreach (var e in _sockets.Finish(() => NextId)) _files.Add(e);
            ResolveSocketMappings();
        }
        finally { CloseFilesInFlight(); }
    }

    private uint NextId => (uint)_files.Count + 1;

    /// <summary>A path-only regular entry (mapped files, exe, cwd, root), shared by all its users.</summary>
    public uint RegularForPath(string path, int flags)
    {
        if (_byPath.TryGetValue((path, flags), out var id)) return id;
        var st = LibC.Stat(path);
        id = NextId;
        _files.Add(new FileEntry
        {
            Type = FdTypes.Reg,
            Id = id,
            Reg = new RegFileEntry
            {
                Id = id, Flags = (uint)flags, Pos = 0, Fown = NoOwner(), Name = path,
                Size = (ulong)st.st_size, Mode = st.st_mode,
            },
        });
        _byPath[(path, flags)] = id;
        return id;
    }

    /// <summary>Every fd of <paramref name="pid"/> as fdinfo entries; refuses what crisp cannot restore.</summary>
    public List<FdinfoEntry> CollectFds(int pid, int pidfd, int imagePid, IReadOnlyList<int>? only = null)
    {
        var result = new List<FdinfoEntry>();
        foreach (int fd in only ?? Proc.Fds(pid))
        {
            string link = Proc.FdTarget(pid, fd);
            // crisp's own write tracker (pre-dump, --track-mem), not the process's: never restored.
            if (WriteTracking.IsTracker(pid, fd, link)) continue;
            var info = Proc.FdInfo(pid, fd);
            LibC.stat_t st;
            if (LibC.stat($"/proc/{pid}/fd/{fd}", &st) != 0)
                throw new CrispException($"process {pid}: fd {fd} ({link}) cannot be inspected: {Errno.Name(Errno.Last)}");
            uint type = st.st_mode & LibC.S_IFMT;
            bool cloexec = (info.Flags & LibC.O_CLOEXEC) != 0;
            int fileFlags = info.Flags & ~LibC.O_CLOEXEC;

            var (ttyKind, _) = type == LibC.S_IFCHR ? Tty.Classify(st.st_rdev) : (TtyKind.None, -1);
            if (TerminalRefusal(ttyKind) is string tty)
                throw new CrispException($"process {pid}: fd {fd} is {tty} ({link}): not supported yet");
            FdTypes kind;
            if (ttyKind is TtyKind.PtyMaster or TtyKind.PtySlave or TtyKind.CurrentTty) kind = FdTypes.Tty;
            else if (link.StartsWith("pipe:[", StringComparison.Ordinal) && type == LibC.S_IFIFO) kind = FdTypes.Pipe;
            else if (type == LibC.S_IFIFO && link.StartsWith('/')) kind = FdTypes.Fifo;
            // The shmem file of a shared anonymous mapping (opened through map_files) is dumped as a memfd, as CRIU does.
            else if (type == LibC.S_IFREG && (IsMemfdLink(link) || link == ShmemLink)) kind = FdTypes.Memfd;
            else if (type is LibC.S_IFREG or LibC.S_IFDIR or LibC.S_IFCHR && link.StartsWith('/')) kind = FdTypes.Reg;
            // An O_PATH|O_NOFOLLOW fd on a symlink itself (the only way to hold one): reopened the same way by its path.
            else if (type == LibC.S_IFLNK && link.StartsWith('/') && (info.Flags & LibC.O_PATH) != 0) kind = FdTypes.Reg;
            else if (IsPidfdLink(link)) kind = FdTypes.Pidfd;
            else if (NamespaceKind(link) != null) kind = FdTypes.Ns;
            else if (AnonKind(link) is FdTypes anon) kind = anon;
            else if (type == LibC.S_IFSOCK) kind = FdTypes.Unixsk;   // or Inetsk: the socket's family decides below
            else throw new CrispException($"process {pid}: fd {fd} is {Describe(link, type)}: not supported yet");
            bool deleted = kind is FdTypes.Reg or FdTypes.Fifo && link.EndsWith(" (deleted)", StringComparison.Ordinal);

            uint id = FindShared(pid, fd, st.st_ino);
            if (id == 0)
            {
                id = NextId;
                if (kind == FdTypes.Unixsk)
                {
                    var entry = _sockets.Dump(pid, pidfd, fd, id, fileFlags, st.st_ino);
                    _files.Add(entry);
                    kind = entry.Type;
                }
                else if (kind == FdTypes.Pipe)
                {
                    _files.Add(new FileEntry
                    {
                        Type = FdTypes.Pipe, Id = id,
                        Pipe = new PipeEntry { Id = id, PipeId = (uint)st.st_ino, Flags = (uint)fileFlags, Fown = Owner(pid, pidfd, fd) },
                    });
                    if ((fileFlags & LibC.O_ACCMODE) == LibC.O_RDONLY)
                        CapturePipeData(pid, pidfd, fd, (uint)st.st_ino);
                }
                else if (kind == FdTypes.Fifo)
                {
                    // CRIU's layout: the FIFO entry, and a regular entry with its path and flags.
                    uint regId = id + 1;
                    _files.Add(new FileEntry { Type = FdTypes.Fifo, Id = id, Fifo = new FifoEntry { Id = id, PipeId = (uint)st.st_ino, RegfId = regId } });
                    _files.Add(new FileEntry
                    {
                        Type = FdTypes.Reg, Id = regId,
                        Reg = new RegFileEntry { Id = regId, Flags = (uint)fileFlags, Pos = 0, Fown = Owner(pid, pidfd, fd), Name = Undeleted(link), Size = 0, Mode = st.st_mode },
                    });
                    if (deleted) AddGhost(regId, $"/proc/{pid}/fd/{fd}", st, $"process {pid}: fd {fd} ({link})");
                    CaptureFifoData(pid, fd, (uint)st.st_ino);
                }
                else if (kind == FdTypes.Memfd)
                {
                    _files.Add(CollectMemfd(id, pid, pidfd, fd, fileFlags, info.Pos, link, st));
                }
                else if (kind == FdTypes.Ns)
                {
                    _files.Add(CollectNamespaceFile(id, pid, fd, fileFlags, link, st.st_ino));
                }
                else if (kind == FdTypes.Tty)
                {
                    CollectTty(id, pid, pidfd, fd, fileFlags, link, st, ttyKind);
                }
                else if (kind == FdTypes.Pidfd)
                {
                    _files.Add(CollectPidfd(id, pid, pidfd, fd, fileFlags, info, st.st_ino));
                }
                else if (kind != FdTypes.Reg)
                {
                    var anon = CollectAnon(kind, id, pid, pidfd, fd, fileFlags, info, _epollTargetsOf);
                    NoteGhostWatches(anon, $"process {pid}: fd {fd}");
                    _files.Add(anon);
                }
                else
                {
                    _files.Add(new FileEntry
                    {
                        Type = FdTypes.Reg, Id = id,
                        Reg = new RegFileEntry
                        {
                            Id = id, Flags = (uint)fileFlags, Pos = (ulong)info.Pos, Fown = Owner(pid, pidfd, fd), Name = Undeleted(link),
                            Size = (ulong)st.st_size, Mode = st.st_mode,
                        },
                    });
                    if (deleted) AddGhost(id, $"/proc/{pid}/fd/{fd}", st, $"process {pid}: fd {fd} ({link})");
                }
                _descriptors.Add((pid, fd, st.st_ino, id));
            }
            if (kind == FdTypes.Unixsk) kind = _files[(int)id - 1].Type;   // a shared socket: its entry says which family
            CollectLocks(pid, imagePid, fd, id, info);
            var fdinfo = new FdinfoEntry { Id = id, Flags = cloexec ? 1u : 0u, Type = kind, Fd = (uint)fd };
            if (kind == FdTypes.Tty) NoteTtyFd(id, fdinfo, $"process {pid}: fd {fd} ({link})");
            result.Add(fdinfo);
        }
        return result;
    }

    private uint FindShared(int pid, int fd, ulong ino)
    {
        foreach (var d in _descriptors)
        {
            if (d.Ino != ino) continue;
            if (LibC.Syscall(LibC.SYS_kcmp, d.Pid, pid, LibC.KCMP_FILE, d.Fd, fd) == 0) return d.Id;
        }
        return 0;
    }

    /// <summary>
    /// Copies the bytes buffered in a pipe without consuming them: the read end is taken into
    /// crisp with pidfd_getfd and tee(2)'d into a pipe of our own.
    /// </summary>
    private void CapturePipeData(int pid, int pidfd, int fd, uint pipeId)
    {
        if (!_pipesWithData.Add(pipeId)) return;
        int local = LibC.pidfd_getfd(pidfd, fd);
        Errno.Check(local, "pidfd_getfd", $"{pid}, fd {fd}");
        CopyPipeData(local, pid, fd, pipeId, _pipeData);
    }

    /// <summary>
    /// A named FIFO's buffered bytes, whichever end the fd is: crisp opens the FIFO for reading
    /// itself (O_NONBLOCK, so it never waits for a writer) and tee(2)s from that.
    /// </summary>
    private void CaptureFifoData(int pid, int fd, uint pipeId)
    {
        if (!_fifosWithData.Add(pipeId)) return;
        string link = $"/proc/{pid}/fd/{fd}";
        int local = Errno.Check(LibC.open(link, LibC.O_RDONLY | LibC.O_NONBLOCK | LibC.O_CLOEXEC, 0), "open", $"{link} (a FIFO)");
        CopyPipeData(local, pid, fd, pipeId, _fifoData);
    }

    /// <summary>Copies what <paramref name="local"/> (a read end, closed here) holds into <paramref name="into"/>.</summary>
    private static void CopyPipeData(int local, int pid, int fd, uint pipeId, List<PipeData> into)
    {
        int* p = stackalloc int[2];
        try
        {
            int capacity = Errno.Check(LibC.fcntl(local, LibC.F_GETPIPE_SZ, 0), "fcntl(F_GETPIPE_SZ)", $"{pid}, fd {fd}");
            Errno.Check(LibC.pipe2(p, LibC.O_CLOEXEC | LibC.O_NONBLOCK), "pipe2", "pipe data copy");
            if (LibC.fcntl(p[1], LibC.F_SETPIPE_SZ, capacity) < 0)
                throw new CrispException($"process {pid}: fd {fd} is a pipe of {capacity} bytes, larger than crisp may allocate ({Errno.Name(Errno.Last)})");
            long n = LibC.Syscall(LibC.SYS_tee, local, p[1], int.MaxValue, LibC.SPLICE_F_NONBLOCK);
            if (n < 0)
            {
                if (Errno.Last == Errno.EAGAIN) n = 0; // empty pipe
                else throw Errno.Failure("tee", $"{pid}, fd {fd}");
            }
            var data = new byte[n];
            fixed (byte* d = data)
            {
                long got = 0;
                while (got < n)
                {
                    long r = Errno.Check(LibC.read(p[0], d + got, (nuint)(n - got)), "read", "pipe data copy");
                    // End of data before the bytes tee gave: no errno to read (it would be a stale one).
                    if (r == 0) throw new SyscallException("read", Errno.EIO, $"pipe data copy: end after {got} of {n} bytes");
                    got += r;
                }
            }
            // An entry for every pipe (and FIFO), empty ones too, as CRIU writes them: it carries the pipe's size (zdtm pipe03).
            into.Add(new PipeData(new PipeDataEntry { PipeId = pipeId, Bytes = (uint)n, Size = (uint)capacity }, data));
        }
        finally
        {
            LibC.close(local);
            if (p[0] > 0) { LibC.close(p[0]); LibC.close(p[1]); }
        }
    }

    private static string Describe(string link, uint type) => type switch
    {
        LibC.S_IFSOCK => $"a socket ({link})",
        LibC.S_IFIFO => $"a named FIFO ({link})",
        LibC.S_IFBLK => $"a block device ({link})",
        _ when link.StartsWith("anon_inode:", StringComparison.Ordinal) => $"an {link["anon_inode:".Length..].Trim('[', ']')} ({link})",
        _ => $"an unsupported file ({link})",
    };

    private const int F_GETSIG = 11, F_GETOWN_EX = 16, F_GETOWNER_UIDS = 17;

    /// <summary>
    /// The file's owner (F_SETOWN/F_SETOWN_EX: who gets SIGIO/SIGURG), its LibC.F_SETSIG signal and the
    /// uids recorded with the owner (the signal's permission check uses them), read from crisp on
    /// a copy of the fd: they belong to the open file description, not the fd.
    /// </summary>
    private static FownEntry Owner(int pid, int pidfd, int fd)
    {
        var fown = NoOwner();
        int local = LibC.pidfd_getfd(pidfd, fd);
        Errno.Check(local, "pidfd_getfd", $"{pid}, fd {fd}");
        try
        {
            int fl = Errno.Check(LibC.fcntl(local, LibC.F_GETFL, 0), "fcntl(F_GETFL)", $"{pid}, fd {fd}");
            if ((fl & LibC.O_PATH) != 0) return fown;
            fown.Signum = (uint)Errno.Check(LibC.fcntl(local, F_GETSIG, 0), "fcntl(F_GETSIG)", $"{pid}, fd {fd}");
            int* owner = stackalloc int[2];
            Errno.Check(LibC.fcntl(local, F_GETOWN_EX, (long)owner), "fcntl(F_GETOWN_EX)", $"{pid}, fd {fd}");
            if (owner[1] == 0) return fown;
            uint* uids = stackalloc uint[2];
            Errno.Check(LibC.fcntl(local, F_GETOWNER_UIDS, (long)uids), "fcntl(F_GETOWNER_UIDS)", $"{pid}, fd {fd}");
            (fown.PidType, fown.Pid, fown.Uid, fown.Euid) = ((uint)owner[0], (uint)owner[1], uids[0], uids[1]);
            return fown;
        }
        finally { LibC.close(local); }
    }

    private static FownEntry NoOwner() => new() { Uid = 0, Euid = 0, Signum = 0, PidType = 0, Pid = 0 };
}
