using Crisp.Images;
using Crisp.Images.Proto;
using Crisp.Native;
using Crisp.Native.ProcFs;

namespace Crisp.Checkpoint.Dump;

/// <summary>
/// Files deleted while open or mapped (CRIU's ghost files). The regular entry keeps the name the
/// file had; remap-fpath.img says it is opened through a ghost instead, and ghost-file-ID.img
/// holds the inode: mode, owner, times, and for a regular file its bytes (holes left out once it
/// is large enough to be worth chunks, as CRIU does), for a device its rdev. One ghost per
/// inode, whichever fds and mappings of the tree refer to it. Bytes on disk above --ghost-limit
/// are refused. A file deleted under one name but still linked under another is refused (that
/// is CRIU's --link-remap).
/// </summary>
internal sealed unsafe partial class FileTable
{
    private const long GhostChunksThreshold = 3 * 4096;
    private const int SEEK_DATA_ = 3, SEEK_HOLE_ = 4;

    public long GhostLimit { get; init; } = DumpOptions.DefaultGhostLimit;

    private static readonly Lazy<ulong> ProcDev = new(() => LibC.Stat("/proc/self").st_dev);

    private readonly Dictionary<(ulong Dev, ulong Ino), uint> _ghostIds = [];
    private readonly List<RemapFilePathEntry> _remaps = [];
    private readonly List<(uint Id, GhostFileEntry Entry, List<(long, byte[])> Data)> _ghosts = [];
    private readonly Dictionary<(ulong Dev, ulong Ino, int Flags), uint> _ghostMappings = [];

    private static string Undeleted(string link) =>
        link.EndsWith(" (deleted)", StringComparison.Ordinal) ? link[..^" (deleted)".Length] : link;

    /// <summary>The remap of file <paramref name="fileId"/> to the ghost of the inode <paramref name="procLink"/> reopens.</summary>
    private void AddGhost(uint fileId, string procLink, in LibC.stat_t st, string where)
    {
        uint type = st.st_mode & LibC.S_IFMT;
        // A /proc entry of a process that is gone (zdtm unhashed_proc): CRIU's procfs remap (FileTable.DeadProc.cs).
        string undeleted = Undeleted(LibC.ReadLink(procLink));
        if (undeleted.StartsWith("/proc/", StringComparison.Ordinal) || st.st_dev == ProcDev.Value)
        {
            AddDeadProcRemap(fileId, undeleted, where);
            return;
        }
        if (st.st_nlink > 0 && type != LibC.S_IFDIR)
            throw new CrispException($"{where} is a file deleted under this name but still linked under another ({st.st_nlink} link(s)): not supported yet (CRIU's --link-remap)");
        if (type is not (LibC.S_IFREG or LibC.S_IFDIR or LibC.S_IFCHR or LibC.S_IFBLK or LibC.S_IFIFO or LibC.S_IFLNK))
            throw new CrispException($"{where} is a deleted file of mode 0{st.st_mode:o}: not supported yet");
        if (!_ghostIds.TryGetValue((st.st_dev, st.st_ino), out uint ghostId))
        {
            long onDisk = st.st_blocks * 512;
            if (type == LibC.S_IFREG && onDisk > GhostLimit)
                throw new CrispException($"{where} is a deleted file holding {onDisk} bytes on disk, above the ghost limit of {GhostLimit} (raise it with --ghost-limit)");
            ghostId = (uint)_ghosts.Count + 1;
            var entry = new GhostFileEntry
            {
                Uid = st.st_uid, Gid = st.st_gid, Mode = st.st_mode,
                Dev = (uint)st.st_dev, Ino = st.st_ino,
                Atim = new Timeval { TvSec = (ulong)st.st_atime, TvUsec = (ulong)st.st_atime_nsec / 1000 },
                Mtim = new Timeval { TvSec = (ulong)st.st_mtime, TvUsec = (ulong)st.st_mtime_nsec / 1000 },
            };
            if (type is LibC.S_IFCHR or LibC.S_IFBLK) entry.Rdev = (uint)st.st_rdev;
            if (type == LibC.S_IFLNK) entry.SymlnkTarget = SymlinkTarget(procLink, where);
            var data = new List<(long, byte[])>();
            if (type == LibC.S_IFREG)
            {
                if (st.st_size >= GhostChunksThreshold) { entry.Chunks = true; entry.Size = (ulong)st.st_size; }
                int fd = Errno.Check(LibC.open(procLink, LibC.O_RDONLY | LibC.O_CLOEXEC, 0), "open", procLink);
                try { data = GhostData(fd, st.st_size, entry.Chunks, where); }
                finally { LibC.close(fd); }
            }
            _ghosts.Add((ghostId, entry, data));
            _ghostIds[(st.st_dev, st.st_ino)] = ghostId;
        }
        _remaps.Add(new RemapFilePathEntry { OrigId = fileId, RemapId = ghostId, RemapType = RemapType.Ghost });
    }

    /// <summary>
    /// What a symlink held open (O_PATH) points to: the /proc link leads to the symlink inode
    /// itself, and readlinkat on an O_PATH fd of it with an empty name reads that inode's target.
    /// </summary>
    private static string SymlinkTarget(string procLink, string where)
    {
        int fd = Errno.Check(LibC.open(procLink, LibC.O_PATH | LibC.O_CLOEXEC, 0), "open(O_PATH)", procLink);
        try
        {
            var buf = new byte[4096];
            long n;
            fixed (byte* b = buf)
            fixed (byte* empty = new byte[1])
                n = LibC.Syscall(SYS_readlinkat, fd, (long)empty, (long)b, buf.Length);
            if (n < 0) throw Errno.Failure("readlinkat", $"{procLink} ({where})");
            if (n >= buf.Length) throw new CrispException($"{where}: a symlink target longer than {buf.Length - 1} bytes");
            return System.Text.Encoding.UTF8.GetString(buf, 0, (int)n);
        }
        finally { LibC.close(fd); }
    }

    private const long SYS_readlinkat = 267;

    /// <summary>The bytes of a deleted regular file: whole, or its data extents (LibC.SEEK_DATA/LibC.SEEK_HOLE).</summary>
    private static List<(long, byte[])> GhostData(int fd, long size, bool chunks, string where)
    {
        var runs = new List<(long, byte[])>();
        if (!chunks)
        {
            if (size > 0) runs.Add((0, ReadExactly(fd, 0, size, where)));
            return runs;
        }
        long at = 0;
        while (at < size)
        {
            long data = LibC.lseek(fd, at, SEEK_DATA_);
            if (data < 0) break; // ENXIO: only a hole from here on
            long hole = Math.Min(Errno.Check(LibC.lseek(fd, data, SEEK_HOLE_), "lseek(SEEK_HOLE)", where), size);
            runs.Add((data, ReadExactly(fd, data, hole - data, where)));
            at = hole;
        }
        return runs;
    }

    private static byte[] ReadExactly(int fd, long off, long len, string where)
    {
        var buf = new byte[len];
        fixed (byte* p = buf)
            for (long got = 0; got < len;)
            {
                long n = LibC.pread(fd, p + got, (nuint)(len - got), off + got);
                Errno.Check(n, "pread", where);
                if (n == 0) throw new CrispException($"{where}: the deleted file ended at {off + got} of {off + len} bytes while being read");
                got += n;
            }
        return buf;
    }

    /// <summary>The regular entry of a deleted file a mapping shows, one per inode and open mode.</summary>
    public uint GhostForMapping(int pid, Vma v, int flags)
    {
        string mapFile = $"/proc/{pid}/map_files/{v.Start:x}-{v.End:x}";
        var st = LibC.Stat(mapFile);
        if (_ghostMappings.TryGetValue((st.st_dev, st.st_ino, flags), out var known)) return known;
        uint id = NextId;
        _files.Add(new FileEntry
        {
            Type = FdTypes.Reg, Id = id,
            Reg = new RegFileEntry { Id = id, Flags = (uint)flags, Pos = 0, Fown = NoOwner(), Name = v.Path, Size = (ulong)st.st_size, Mode = st.st_mode },
        });
        AddGhost(id, mapFile, st, $"process {pid}: mapping {v}");
        _ghostMappings[(st.st_dev, st.st_ino, flags)] = id;
        return id;
    }

    /// <summary>
    /// The regular entry for a process's cwd, root or exe (<paramref name="what"/>, a /proc/PID
    /// link): by path, or a ghost when the link says the directory or file was deleted.
    /// </summary>
    public uint RegularForProcLink(int pid, string what, int flags)
    {
        string link = LibC.ReadLink($"/proc/{pid}/{what}");
        if (!link.EndsWith(" (deleted)", StringComparison.Ordinal)) return RegularForPath(link, flags);
        string procLink = $"/proc/{pid}/{what}";
        var st = LibC.Stat(procLink);
        if (_ghostMappings.TryGetValue((st.st_dev, st.st_ino, flags), out var known)) return known;
        uint id = NextId;
        _files.Add(new FileEntry
        {
            Type = FdTypes.Reg, Id = id,
            Reg = new RegFileEntry { Id = id, Flags = (uint)flags, Pos = 0, Fown = NoOwner(), Name = Undeleted(link), Size = (ulong)st.st_size, Mode = st.st_mode },
        });
        AddGhost(id, procLink, st, $"process {pid}: {what} ({link})");
        _ghostMappings[(st.st_dev, st.st_ino, flags)] = id;
        return id;
    }

    /// <summary>remap-fpath.img and the ghost files, if the tree held deleted files.</summary>
    public void WriteGhosts(ImageDir dir)
    {
        if (_remaps.Count == 0) return;
        foreach (var (id, entry, data) in _ghosts) dir.WriteGhostFile(id, entry, data);
        dir.WriteRemaps(_remaps);
    }
}
