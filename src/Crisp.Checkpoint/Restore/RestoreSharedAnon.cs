using Crisp.Images;
using Crisp.Images.Proto;
using Crisp.Inject;
using Crisp.Native;

namespace Crisp.Checkpoint.Restore;

/// <summary>
/// Shared anonymous memory (vma.status VMA_ANON_SHARED, vma.shmid the object's inode at dump).
/// crisp makes each object once, in itself: an anonymous MAP_SHARED mapping as large as the
/// furthest any VMA reaches into it (pgoff + length), opened through /proc/self/map_files (the
/// shmem file behind it, a deleted /dev/zero as at dump) and unmapped again. The bytes of
/// pagemap-shmem-SHMID.img are written into that file; every VMA of every process that maps
/// the object then maps the same file MAP_SHARED at its pgoff, so what one process writes the
/// others read, as before the dump (zdtm maps01). crisp's fds are closed with the shared copies.
/// </summary>
internal sealed unsafe partial class RestoreSession
{

    private static bool IsSharedAnon(VmaEntry v) =>
        (v.Status & VmaStatus.VMA_ANON_SHARED) != 0 && (v.Flags & LibC.MAP_SHARED) != 0 && v.Shmid != 0;

    private int SharedAnonObject(ulong shmid)
    {
        if (_c.SharedAnonFds.TryGetValue(shmid, out int fd)) return fd;
        ulong size = _c.Procs.SelectMany(p => p.Mm.Vmas).Where(v => IsSharedAnon(v) && v.Shmid == shmid)
            .Max(v => v.Pgoff + (v.End - v.Start));
        string what = $"shared anonymous memory {shmid} ({size} bytes)";
        nint at = LibC.mmap(0, (nuint)size, LibC.PROT_READ | LibC.PROT_WRITE, LibC.MAP_SHARED | LibC.MAP_ANONYMOUS, -1, 0);
        if (at == LibC.MAP_FAILED) throw Errno.Failure("mmap", what);
        try
        {
            string mapFile = $"/proc/self/map_files/{(ulong)at:x}-{(ulong)at + size:x}";
            fd = Errno.Check(LibC.open(mapFile, LibC.O_RDWR | LibC.O_CLOEXEC, 0), "open", $"{mapFile} ({what})");
        }
        finally { LibC.munmap(at, (nuint)size); }
        try { FillSharedAnon(fd, shmid, size, what); }
        catch { LibC.close(fd); throw; }
        _c.SharedAnonFds[shmid] = fd;
        return fd;
    }

    private void FillSharedAnon(int fd, ulong shmid, ulong size, string what)
    {
        if (!_c.Dir.Exists(ImageDir.ShmemPagemapName(shmid))) return;
        using var pm = _c.Dir.OpenShmemPagemap(shmid);
        var buf = new byte[1 << 20];
        foreach (var run in pm.Runs.Where(r => r.IsPresent))
        {
            if (run.End > size)
                throw new ImageException(_c.Dir.PathOf(ImageDir.ShmemPagemapName(shmid)), $"pages up to offset 0x{run.End:x}, past the {size} bytes its VMAs map");
            for (ulong off = 0; off < run.End - run.Vaddr; off += (ulong)buf.Length)
            {
                int n = (int)Math.Min((ulong)buf.Length, run.End - run.Vaddr - off);
                pm.ReadPagesAt(run.FileOffset + (long)off, buf.AsSpan(0, n));
                long pos = (long)(run.Vaddr + off);
                fixed (byte* b = buf)
                    for (int done = 0; done < n;)
                        done += (int)Errno.Check(LibC.pwrite(fd, b + done, (nuint)(n - done), pos + done), "pwrite", what);
            }
        }
    }

    /// <summary>The object as a new fd of the task, for its mmap (the caller closes it).</summary>
    private int SharedAnonIntoTask(ProcessImage p, RestoreTask t, VmaEntry v) =>
        CrispFdIntoTask(p, t, SharedAnonObject(v.Shmid), $"shared anonymous memory {v.Shmid}");

    private void CloseSharedAnon()
    {
        foreach (var fd in _c.SharedAnonFds.Values) LibC.close(fd);
        _c.SharedAnonFds.Clear();
    }
}
