using Crisp.Images;
using Crisp.Images.Proto;
using Crisp.Native;
using Crisp.Native.ProcFs;

namespace Crisp.Checkpoint.Dump;

/// <summary>
/// memfd descriptors. As in CRIU's images, a memfd is two things: the open file description
/// (file_entry.memfd: flags, offset) and its inode (memfd.img: name, size, seals, mode, owner),
/// one inode for every description and process that refers to it; the inode's bytes go to
/// pagemap-shmem-SHMID.img with SHMID the inode number, holes left out.
/// </summary>
internal sealed unsafe partial class FileTable
{
    private const int F_GET_SEALS = 1034;
    /// <summary>
    /// pages-N ids of memfd contents start here, far above the ones process pagemaps get (a page
    /// server allocates those on its side during a remote dump).
    /// </summary>
    public const uint MemfdPagesIdBase = 0x4D000000;

    private readonly Dictionary<ulong, MemfdInodeEntry> _memfdInodes = [];     // inode number → entry
    private readonly List<(MemfdInodeEntry Inode, List<(long Offset, byte[] Bytes)> Data)> _memfdData = [];

    /// <summary>What /proc shows for the shmem file of a shared anonymous mapping.</summary>
    private const string ShmemLink = "/dev/zero (deleted)";

    /// <summary>The memfd's name as CRIU keeps it: after "/memfd:"; a shared anonymous mapping's shmem file is named "/dev/zero".</summary>
    private static string MemfdName(string path) =>
        path.StartsWith("/memfd:", StringComparison.Ordinal) ? path["/memfd:".Length..] : path;

    private static bool IsMemfdLink(string link) =>
        link.StartsWith("/memfd:", StringComparison.Ordinal) && link.EndsWith(" (deleted)", StringComparison.Ordinal);

    private FileEntry CollectMemfd(uint id, int pid, int pidfd, int fd, int flags, long pos, string link, in LibC.stat_t st)
    {
        string where = $"process {pid}: fd {fd}";
        if (!_memfdInodes.TryGetValue(st.st_ino, out var inode))
        {
            int local = Errno.Check(LibC.pidfd_getfd(pidfd, fd), "pidfd_getfd", where);
            try { inode = AddMemfdInode(local, MemfdName(link[..^" (deleted)".Length]), st, where); }
            finally { LibC.close(local); }
        }
        return new FileEntry
        {
            Type = FdTypes.Memfd, Id = id,
            Memfd = new MemfdFileEntry { Id = id, Flags = (uint)flags, Pos = (ulong)pos, Fown = NoOwner(), InodeId = (uint)inode.InodeId },
        };
    }

    private readonly Dictionary<(ulong Ino, int Flags), uint> _memfdMappingFiles = [];

    /// <summary>
    /// The memfd file entry a mapping of a memfd refers to (vma.shmid), one per inode and open
    /// mode; the inode is read through /proc/PID/map_files if no descriptor showed it yet.
    /// </summary>
    public uint MemfdForMapping(int pid, Vma v, int flags)
    {
        string where = $"process {pid}: mapping {v}";
        string mapFile = $"/proc/{pid}/map_files/{v.Start:x}-{v.End:x}";
        int local = Errno.Check(LibC.open(mapFile, LibC.O_RDONLY | LibC.O_CLOEXEC, 0), "open", mapFile);
        try
        {
            LibC.stat_t st;
            Errno.Check(LibC.fstat(local, &st), "fstat", mapFile);
            if (_memfdMappingFiles.TryGetValue((st.st_ino, flags), out var known)) return known;
            if (!_memfdInodes.TryGetValue(st.st_ino, out var inode))
                inode = AddMemfdInode(local, MemfdName(v.Path), st, where);
            uint id = NextId;
            _files.Add(new FileEntry
            {
                Type = FdTypes.Memfd, Id = id,
                Memfd = new MemfdFileEntry { Id = id, Flags = (uint)flags, Pos = 0, Fown = NoOwner(), InodeId = (uint)inode.InodeId },
            });
            _memfdMappingFiles[(st.st_ino, flags)] = id;
            return id;
        }
        finally { LibC.close(local); }
    }

    private MemfdInodeEntry AddMemfdInode(int local, string name, in LibC.stat_t st, string where)
    {
        const long SYS_fstatfs = 138;
        const long HUGETLBFS_MAGIC = 0x958458f6;
        long* fs = stackalloc long[15]; // struct statfs, f_type first
        Errno.Check(LibC.Syscall(SYS_fstatfs, local, (long)fs), "fstatfs", where);
        if (fs[0] == HUGETLBFS_MAGIC)
            throw new CrispException($"{where} is a hugetlb memfd (memfd:{name}): not supported yet");
        int seals = Errno.Check(LibC.fcntl(local, F_GET_SEALS, 0), "fcntl(F_GET_SEALS)", where);
        var inode = new MemfdInodeEntry
        {
            Name = name,
            Uid = st.st_uid, Gid = st.st_gid, Size = (ulong)st.st_size, Shmid = (uint)st.st_ino,
            Seals = (uint)seals, InodeId = (ulong)_memfdInodes.Count + 1, Mode = st.st_mode,
        };
        _memfdData.Add((inode, ReadData(local, st.st_size, where)));
        _memfdInodes[st.st_ino] = inode;
        return inode;
    }

    /// <summary>The memfd's data extents (LibC.SEEK_DATA/LibC.SEEK_HOLE), in whole pages, all-zero pages left out.</summary>
    private static List<(long, byte[])> ReadData(int fd, long size, string where)
    {
        const int Page = LibC.PageSize;
        var runs = new List<(long, byte[])>();
        long end = (size + Page - 1) / Page * Page;
        long at = 0;
        var page = new byte[Page];
        while (at < end)
        {
            long data = LibC.lseek(fd, at, LibC.SEEK_DATA);
            if (data < 0) break; // ENXIO: no data from here on
            long hole = Math.Min(Errno.Check(LibC.lseek(fd, data, LibC.SEEK_HOLE), "lseek(SEEK_HOLE)", where), end);
            for (long off = data / Page * Page; off < hole; off += Page)
            {
                Array.Clear(page);
                fixed (byte* p = page)
                {
                    long got = 0;
                    while (got < Page && off + got < size)
                    {
                        long n = LibC.pread(fd, p + got, (nuint)(Page - got), off + got);
                        Errno.Check(n, "pread", where);
                        if (n == 0) break;
                        got += n;
                    }
                }
                if (page.AsSpan().IndexOfAnyExcept((byte)0) >= 0) runs.Add((off, (byte[])page.Clone()));
            }
            at = (hole + Page - 1) / Page * Page;
        }
        return runs;
    }

    /// <summary>memfd.img and each inode's pagemap-shmem, if the tree holds memfds.</summary>
    public void WriteMemfds(ImageDir dir)
    {
        if (_memfdInodes.Count == 0) return;
        dir.WriteMemfdInodes(_memfdData.Select(d => d.Inode));
        foreach (var (inode, data) in _memfdData)
        {
            using var w = dir.CreateShmemPagemap(inode.Shmid, MemfdPagesIdBase + (uint)inode.InodeId);
            foreach (var (off, bytes) in data) w.Write((ulong)off, bytes);
            w.Complete();
        }
    }
}
