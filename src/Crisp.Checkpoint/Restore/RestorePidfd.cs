using Crisp.Images;
using Crisp.Images.Proto;
using Crisp.Native;

namespace Crisp.Checkpoint.Restore;

/// <summary>
/// pidfds. One on a live process of the tree is opened by crisp with pidfd_open on that process
/// (every process exists before any file is placed) and taken by the task like any description
/// crisp made. One on a process that was gone at the dump needs a process that is gone too: as
/// CRIU does, crisp starts a helper, opens every pidfd recorded with that dead process's inode on
/// it, then kills and reaps it, so those pidfds again share one dead process (and differ from
/// the pidfds of another dead one).
/// </summary>
internal sealed unsafe partial class RestoreSession
{
    private const uint PIDFD_NONBLOCK = LibC.O_NONBLOCK;

    private void PlacePidfd(ProcessImage p, RestoreTask t, FileEntry file, int fd, bool cloexec)
    {
        var e = file.Pidfd ?? throw new ImageException(_c.Dir.PathOf(ImageDir.FilesName), $"file {file.Id} is a pidfd without its entry");
        string what = $"pidfd for fd {fd} of {t}";
        if (e.Nspid > 0)
        {
            if (!_c.HostOf.TryGetValue(e.Nspid, out int host))
                throw new CrispException($"{what}: it refers to process {e.Nspid}, which the images do not restore");
            _c.CrispCopies[file.Id] = (int)Errno.Check(LibC.pidfd_open(host, e.Flags & PIDFD_NONBLOCK), "pidfd_open", $"{what}: process {e.Nspid} (here {host})");
        }
        else if (!_c.CrispCopies.ContainsKey(file.Id))
            OpenDeadPidfds(e.Ino, what);
        PlaceShared(p, t, file, fd, cloexec);
    }

    /// <summary>Every dead-process pidfd of inode <paramref name="ino"/>, opened on one helper that then dies.</summary>
    private void OpenDeadPidfds(uint ino, string what)
    {
        var entries = _c.Files.Values.Where(f => f.Type == FdTypes.Pidfd && f.Pidfd is { Nspid: <= 0 } d && d.Ino == ino).ToList();
        int helper = ProcessSpawner.Spawn(new SpawnOptions
        {
            Path = "/bin/sleep", Argv = ["sleep", "600"], Envp = [],
            Stdin = StdioSource.DevNull(false), Stdout = StdioSource.DevNull(true), Stderr = StdioSource.DevNull(true),
        });
        try
        {
            foreach (var f in entries)
                _c.CrispCopies[f.Id] = (int)Errno.Check(LibC.pidfd_open(helper, f.Pidfd.Flags & PIDFD_NONBLOCK), "pidfd_open", $"{what}: the stand-in for a process gone at the dump");
        }
        finally
        {
            LibC.kill(helper, LibC.SIGKILL);
            try { ProcessSpawner.Wait(helper); }
            catch (SyscallException) { }
        }
    }
}
