using System.Text;
using Crisp.Images;
using Crisp.Images.Proto;
using Crisp.Native;

namespace Crisp.Checkpoint.Restore;

/// <summary>
/// Ghost files (files deleted while open or mapped, remap-fpath.img and ghost-file-ID.img).
/// Before any process is made, crisp recreates each ghost inode: at the name the file had when
/// that name is free (so /proc/PID/fd shows the same "NAME (deleted)" afterwards), else beside
/// it as NAME.cr.ID.ghost as CRIU names it; missing parent directories are made for the time of
/// the restore. Every file entry remapped to the ghost is then opened (fds, mappings) through
/// that path like any regular file. Once every process has its files the ghosts are unlinked
/// and the directories crisp made removed again, which leaves the inodes as they were: open,
/// mapped, with no name. A failed restore removes them too.
/// </summary>
internal sealed unsafe partial class RestoreSession
{
    private const long SYS_mkdirat = 258, SYS_mknodat = 259, SYS_unlinkat = 263, SYS_utimensat = 280;
    private const int AT_FDCWD = -100, AT_REMOVEDIR = 0x200;


    private void CreateGhosts()
    {
        var remaps = _c.Dir.ReadRemaps();
        var made = new Dictionary<uint, string>();   // ghost id → its path here
        foreach (var r in remaps)
        {
            if (r.HasRemapType && r.RemapType == RemapType.Procfs && _c.Files.TryGetValue(r.OrigId, out var pf) && pf.Reg != null)
            {
                pf.Reg.Name = DeadProcEntry(r, pf.Reg.Name);
                continue;
            }
            if (!r.HasRemapType || r.RemapType != RemapType.Ghost)
                throw new CrispException($"file {r.OrigId} is remapped as {(r.HasRemapType ? r.RemapType : RemapType.Linked)}, which crisp cannot restore yet");
            if (!_c.Files.TryGetValue(r.OrigId, out var f) || f.Reg == null)
                throw new ImageException(_c.Dir.PathOf(ImageDir.RemapFpathName), $"remap of {r.OrigId}: no regular file with that id");
            if (!made.TryGetValue(r.RemapId, out var path))
                made[r.RemapId] = path = MakeGhost(r.RemapId, f.Reg.Name);
            f.Reg.Name = path;
        }
        if (made.Count > 0) Log.D($"restore: {made.Count} ghost file(s) made");
    }

    private string MakeGhost(uint id, string name)
    {
        var (e, data) = _c.Dir.ReadGhostFile(id);
        string what = $"ghost file {id:x} of {name}";
        MakeParents(name);
        uint type = e.Mode & LibC.S_IFMT;
        string path = name;
        for (int attempt = 0; ; attempt++)
        {
            long r = type switch
            {
                LibC.S_IFDIR => Sys(SYS_mkdirat, path, e.Mode & 0xfff),
                LibC.S_IFCHR or LibC.S_IFBLK when e.HasRdev => Sys(SYS_mknodat, path, e.Mode, e.Rdev),
                LibC.S_IFIFO => Sys(SYS_mknodat, path, e.Mode, 0),
                LibC.S_IFREG => MakeRegularGhost(path, e, data, what),
                LibC.S_IFLNK when e.HasSymlnkTarget => Symlink(e.SymlnkTarget, path),
                _ => throw new ImageException(_c.Dir.PathOf(ImageDir.GhostFileName(id)), $"{what}: mode 0{e.Mode:o}{(type is LibC.S_IFCHR or LibC.S_IFBLK ? " without rdev" : "")} is not one crisp restores"),
            };
            if (r >= 0) break;
            if (Errno.Last != Errno.EEXIST || attempt > 0) throw Errno.Failure(type switch { LibC.S_IFDIR => "mkdir", LibC.S_IFREG => "open(O_CREAT|O_EXCL)", LibC.S_IFLNK => "symlink", _ => "mknod" }, $"{path} ({what})");
            path = $"{name}.cr.{id:x}.ghost";
        }
        _c.GhostPaths.Add((path, type == LibC.S_IFDIR));
        if (e.HasIno) _c.GhostInodes[(e.Dev, e.Ino)] = path;
        // A symlink's own owner and times (never its target's); its mode bits mean nothing and cannot be set.
        bool link = type == LibC.S_IFLNK;
        fixed (byte* pp = Encoding.UTF8.GetBytes(path + "\0"))
            Errno.Check(LibC.Syscall(SYS_fchownat_, AT_FDCWD, (long)pp, e.Uid, e.Gid, link ? AT_SYMLINK_NOFOLLOW : 0), "chown", $"{path} ({what})");
        if (!link) Errno.Check(Sys(SYS_fchmodat_, path, e.Mode & 0xfff), "chmod", $"{path} ({what})");
        if (e.Atim != null && e.Mtim != null)
        {
            long* ts = stackalloc long[4];
            ts[0] = (long)e.Atim.TvSec; ts[1] = (long)e.Atim.TvUsec * 1000;
            ts[2] = (long)e.Mtim.TvSec; ts[3] = (long)e.Mtim.TvUsec * 1000;
            fixed (byte* p = Encoding.UTF8.GetBytes(path + "\0"))
                Errno.Check(LibC.Syscall(SYS_utimensat, AT_FDCWD, (long)p, (long)ts, link ? AT_SYMLINK_NOFOLLOW : 0), "utimensat", $"{path} ({what})");
        }
        return path;
    }

    private const long SYS_fchownat_ = 260, SYS_fchmodat_ = 268, SYS_symlinkat = 266;
    private const int AT_SYMLINK_NOFOLLOW = 0x100;

    /// <summary>symlinkat(target, AT_FDCWD, path): 0, or -1 with errno.</summary>
    private static long Symlink(string target, string path)
    {
        fixed (byte* t = Encoding.UTF8.GetBytes(target + "\0"))
        fixed (byte* p = Encoding.UTF8.GetBytes(path + "\0"))
            return LibC.Syscall(SYS_symlinkat, (long)t, AT_FDCWD, (long)p);
    }

    /// <summary>0, or -1 with errno (EEXIST: the name is taken).</summary>
    private static long MakeRegularGhost(string path, GhostFileEntry e, List<(long Offset, byte[] Bytes)> data, string what)
    {
        int fd = LibC.open(path, LibC.O_WRONLY | LibC.O_CREAT | LibC.O_EXCL | LibC.O_CLOEXEC, (int)(e.Mode & 0xfff));
        if (fd < 0) return -1;
        try
        {
            long size = 0;
            foreach (var (off, bytes) in data)
            {
                fixed (byte* b = bytes)
                    for (int done = 0; done < bytes.Length;)
                        done += (int)Errno.Check(LibC.pwrite(fd, b + done, (nuint)(bytes.Length - done), off + done), "pwrite", $"{path} ({what})");
                size = Math.Max(size, off + bytes.Length);
            }
            if (e.Chunks) size = (long)e.Size;
            Errno.Check(LibC.ftruncate(fd, size), "ftruncate", $"{path} ({what})");
        }
        catch { LibC.close(fd); Sys(SYS_unlinkat, path); throw; }
        LibC.close(fd);
        return 0;
    }

    /// <summary>Makes the directories on the way to <paramref name="path"/> that are gone (removed after the restore).</summary>
    private void MakeParents(string path)
    {
        var missing = new Stack<string>();
        for (string? d = Path.GetDirectoryName(path); d != null && d != "/" && !Directory.Exists(d); d = Path.GetDirectoryName(d))
            missing.Push(d);
        while (missing.Count > 0)
        {
            string d = missing.Pop();
            Errno.Check(Sys(SYS_mkdirat, d, 0x1c0), "mkdir", $"{d} (parent of the deleted file {path})");
            _c.GhostParents.Add(d);
        }
    }

    /// <summary>Unlinks the ghosts and removes the directories made for them: the inodes stay, held by the processes.</summary>
    private void RemoveGhosts()
    {
        EndDeadProcHelpers();
        for (int i = _c.GhostPaths.Count - 1; i >= 0; i--)
        {
            var (path, dir) = _c.GhostPaths[i];
            if (Sys(SYS_unlinkat, path, dir ? AT_REMOVEDIR : 0) < 0)
                Log.W($"cannot remove the ghost file {path}: {Errno.Name(Errno.Last)}");
        }
        for (int i = _c.GhostParents.Count - 1; i >= 0; i--)
            if (Sys(SYS_unlinkat, _c.GhostParents[i], AT_REMOVEDIR) < 0)
                Log.W($"cannot remove the directory {_c.GhostParents[i]} made for a ghost file: {Errno.Name(Errno.Last)}");
        _c.GhostPaths.Clear();
        _c.GhostParents.Clear();
    }

    /// <summary>syscall(nr, AT_FDCWD, path, a, b) with a NUL-terminated path.</summary>
    private static long Sys(long nr, string path, long a = 0, long b = 0)
    {
        fixed (byte* p = Encoding.UTF8.GetBytes(path + "\0"))
            return LibC.Syscall(nr, AT_FDCWD, (long)p, a, b);
    }
}
