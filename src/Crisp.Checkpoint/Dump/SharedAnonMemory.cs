using Crisp.Images;
using Crisp.Native;
using Crisp.Native.ProcFs;

namespace Crisp.Checkpoint.Dump;

/// <summary>
/// Shared anonymous memory (MAP_SHARED|MAP_ANONYMOUS, or a MAP_SHARED mapping of /dev/zero):
/// one shmem object behind a deleted /dev/zero, which fork hands to every child. As in CRIU's
/// images each VMA names the object by its inode (vma.shmid) and carries no pages of its own;
/// the object's bytes are written once, to pagemap-shmem-SHMID.img, with offsets into the
/// object as addresses. They are read through /proc/PID/map_files of the first VMA seen, which
/// opens the object itself (LibC.SEEK_DATA/LibC.SEEK_HOLE skip what was never touched).
/// </summary>
internal sealed unsafe class SharedAnonMemory
{
    /// <summary>pages-N ids of shared anonymous contents start here (memfds' start at FileTable.MemfdPagesIdBase).</summary>
    public const uint PagesIdBase = 0x53000000;

    private readonly Dictionary<ulong, (int Pid, Vma Vma)> _objects = [];   // shmid → first mapping seen

    public void Add(int pid, Vma v) => _objects.TryAdd(v.Inode, (pid, v));

    /// <summary>Leaves out an object dumped as a memfd after all (FileTable.Shmem.cs): its bytes go with the memfd.</summary>
    public void Drop(ulong shmid) => _objects.Remove(shmid);

    public void Write(ImageDir dir)
    {
        uint n = 0;
        foreach (var (shmid, (pid, v)) in _objects)
        {
            string where = $"process {pid}: shared anonymous mapping {v}";
            string mapFile = $"/proc/{pid}/map_files/{v.Start:x}-{v.End:x}";
            int fd = Errno.Check(LibC.open(mapFile, LibC.O_RDONLY | LibC.O_CLOEXEC, 0), "open", mapFile);
            try
            {
                LibC.stat_t st;
                Errno.Check(LibC.fstat(fd, &st), "fstat", mapFile);
                if (st.st_ino != shmid) throw new CrispException($"{where}: {mapFile} is inode {st.st_ino}, not {shmid}");
                using var w = dir.CreateShmemPagemap(shmid, PagesIdBase + n++);
                CopyData(fd, st.st_size, w, where);
                w.Complete();
            }
            finally { LibC.close(fd); }
        }
    }

    /// <summary>The object's data extents in whole pages, all-zero pages left out, in offset order.</summary>
    private static void CopyData(int fd, long size, Crisp.Images.Pages.PagemapWriter w, string where)
    {
        const int Page = LibC.PageSize, Chunk = 256 * Page;
        long end = (size + Page - 1) / Page * Page;
        var buf = new byte[Chunk];
        for (long at = 0; at < end;)
        {
            long data = LibC.lseek(fd, at, LibC.SEEK_DATA);
            if (data < 0) break; // ENXIO: no data from here on
            long hole = Math.Min(Errno.Check(LibC.lseek(fd, data, LibC.SEEK_HOLE), "lseek(SEEK_HOLE)", where), end);
            hole = (hole + Page - 1) / Page * Page;
            for (long off = data / Page * Page; off < hole;)
            {
                int len = (int)Math.Min(Chunk, hole - off);
                fixed (byte* p = buf)
                    for (int got = 0; got < len;)
                    {
                        long r = LibC.pread(fd, p + got, (nuint)(len - got), off + got);
                        Errno.Check(r, "pread", where);
                        if (r == 0) { buf.AsSpan(got, len - got).Clear(); break; }
                        got += (int)r;
                    }
                // Runs of non-zero pages go out as they are.
                for (int i = 0; i < len;)
                {
                    if (buf.AsSpan(i, Page).IndexOfAnyExcept((byte)0) < 0) { i += Page; continue; }
                    int j = i + Page;
                    while (j < len && buf.AsSpan(j, Page).IndexOfAnyExcept((byte)0) >= 0) j += Page;
                    w.Write((ulong)(off + i), buf.AsSpan(i, j - i));
                    i = j;
                }
                off += len;
            }
            at = hole;
        }
    }
}
