using Crisp.Images;
using Crisp.Images.Proto;
using Crisp.Native;

namespace Crisp.Checkpoint.Restore;

/// <summary>
/// memfds. crisp makes each inode once (memfd_create with its name, size, bytes, mode, owner,
/// seals last) and keeps it until every process has its files; each open file description of
/// it is a fresh open of /proc/self/fd/N on crisp's inode fd with the description's flags and
/// offset, which the task takes like any description crisp made (RestoreEventFiles.cs). So
/// several descriptions, and processes, share one inode as they did.
/// </summary>
internal sealed unsafe partial class RestoreSession
{
    private const int MFD_CLOEXEC = 1, MFD_ALLOW_SEALING = 2, F_ADD_SEALS = 1033, F_SEAL_SEAL = 1;
    private const long SYS_fchmod = 91, SYS_fchown = 93;



    /// <param name="openFlags">the flags to open it with instead of the entry's (a mapping's own: CRIU's vma fdflags)</param>
    private int OpenMemfd(MemfdFileEntry m, string what, bool mayUseOriginal = true, uint? openFlags = null)
    {
        int inode = MemfdInode(m.InodeId, what);
        int flags = ((int)(openFlags ?? m.Flags) & ~(LibC.O_CREAT | LibC.O_EXCL | LibC.O_TRUNC)) | LibC.O_CLOEXEC;
        int fd;
        // The description memfd_create made is O_RDWR yet holds no write count on the inode
        // (exec of the memfd works while it is open); one opened through /proc/self/fd does, and
        // makes execveat(memfd) fail with ETXTBSY. The first O_RDWR description gets that one.
        if (mayUseOriginal && ((int)m.Flags & LibC.O_ACCMODE) == LibC.O_RDWR && _c.MemfdOriginalUsed.Add(m.InodeId))
        {
            fd = Errno.Check(LibC.fcntl(inode, LibC.F_DUPFD_CLOEXEC, 0), "fcntl(F_DUPFD_CLOEXEC)", what);
            int status = (int)m.Flags & (LibC.O_APPEND | LibC.O_NONBLOCK | LibC.O_NOATIME);
            if (status != 0 && LibC.fcntl(fd, LibC.F_SETFL, status) < 0)
            {
                var e = Errno.Failure("fcntl(F_SETFL)", what);
                LibC.close(fd);
                throw e;
            }
        }
        else fd = Errno.Check(LibC.open($"/proc/self/fd/{inode}", flags, 0), "open(memfd)", what);
        if (m.Pos != 0 && LibC.lseek(fd, (long)m.Pos, LibC.SEEK_SET) < 0)
        {
            var e = Errno.Failure("lseek", what);
            LibC.close(fd);
            throw e;
        }
        return fd;
    }

    /// <summary>
    /// A description of the memfd as a new fd of the task, for mmap (the caller closes it), opened
    /// with the entry's flags or <paramref name="openFlags"/>.
    /// </summary>
    private int MemfdIntoTask(RestoreTask t, MemfdFileEntry m, string what, uint? openFlags = null)
    {
        int local = OpenMemfd(m, what, mayUseOriginal: false, openFlags);
        try
        {
            int pidfd = (int)t.Check(Code, "pidfd_open(crisp)", LibC.SYS_pidfd_open, Environment.ProcessId, 0);
            try { return (int)t.Check(Code, $"pidfd_getfd(crisp fd {local})", LibC.SYS_pidfd_getfd, pidfd, local, 0); }
            finally { t.Call(Code, LibC.SYS_close, pidfd); }
        }
        finally { LibC.close(local); }
    }

    private int MemfdInode(ulong inodeId, string what)
    {
        if (_c.MemfdInodeFds.TryGetValue(inodeId, out int fd)) return fd;
        _c.MemfdInodes ??= _c.Dir.ReadMemfdInodes().ToDictionary(i => i.InodeId);
        if (!_c.MemfdInodes.TryGetValue(inodeId, out var e))
            throw new ImageException(_c.Dir.PathOf(ImageDir.MemfdName), $"{what}: no memfd inode {inodeId}");
        // A memfd made without MFD_ALLOW_SEALING has exactly F_SEAL_SEAL.
        bool sealable = e.Seals != F_SEAL_SEAL;
        fd = Errno.Check(LibC.memfd_create(e.Name, (uint)(MFD_CLOEXEC | (sealable ? MFD_ALLOW_SEALING : 0))), $"memfd_create({e.Name})", what);
        try
        {
            Errno.Check(LibC.ftruncate(fd, (long)e.Size), "ftruncate(memfd)", what);
            if (_c.Dir.Exists(ImageDir.ShmemPagemapName(e.Shmid)))
            {
                using var pm = _c.Dir.OpenShmemPagemap(e.Shmid);
                var buf = new byte[1 << 20];
                foreach (var run in pm.Runs.Where(r => r.IsPresent))
                    for (ulong off = 0; off < run.End - run.Vaddr; off += (ulong)buf.Length)
                    {
                        int n = (int)Math.Min((ulong)buf.Length, run.End - run.Vaddr - off);
                        pm.ReadPagesAt(run.FileOffset + (long)off, buf.AsSpan(0, n));
                        // The last page may reach past the size: write only what the file holds.
                        long at = (long)(run.Vaddr + off);
                        int len = (int)Math.Min(n, Math.Max(0, (long)e.Size - at));
                        fixed (byte* b = buf)
                            for (int done = 0; done < len;)
                                done += (int)Errno.Check(LibC.pwrite(fd, b + done, (nuint)(len - done), at + done), "pwrite(memfd)", what);
                    }
            }
            if (e.HasMode) Errno.Check(LibC.Syscall(SYS_fchmod, fd, e.Mode & 0xfff), "fchmod(memfd)", what);
            Errno.Check(LibC.Syscall(SYS_fchown, fd, e.Uid, e.Gid), "fchown(memfd)", what);
            if (sealable && e.Seals != 0) Errno.Check(LibC.fcntl(fd, F_ADD_SEALS, e.Seals), "fcntl(F_ADD_SEALS)", what);
        }
        catch { LibC.close(fd); throw; }
        _c.MemfdInodeFds[inodeId] = fd;
        return fd;
    }

    private void CloseMemfdInodes()
    {
        foreach (var fd in _c.MemfdInodeFds.Values) LibC.close(fd);
        _c.MemfdInodeFds.Clear();
        _c.MemfdOriginalUsed.Clear();
    }
}
