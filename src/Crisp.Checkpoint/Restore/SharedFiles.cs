using Crisp.Images.Proto;
using Crisp.Native;

namespace Crisp.Checkpoint.Restore;

/// <summary>
/// Open file descriptions used by more than one process of the tree (files.img holds them once,
/// under one id, and each process's fdinfo refers to that id; a pipe's two ends are two
/// descriptions with the same pipe inode).
///
/// Such a description is created once, in the first process (pstree order) that has it, exactly
/// as an unshared one would be. crisp then takes a copy of it with pidfd_getfd and keeps it until
/// every process has its files; a later process that needs it runs pidfd_open(crisp) and
/// pidfd_getfd on crisp's copy, so it gets the very same description: one offset, one pipe.
/// For a pipe crisp keeps both ends, whichever end the first process used: the other end is
/// often needed only by another process (a parent reading what its child writes).
///
/// crisp's copies are closed as soon as the last process has its files: a pipe write end kept
/// open by crisp would hide the end of file from a reader.
/// </summary>
internal sealed unsafe partial class RestoreSession
{


    /// <summary>Which descriptions (and pipes) more than one process of the tree refers to.</summary>
    private void FindSharedFiles()
    {
        var holders = new Dictionary<uint, HashSet<int>>();
        var pipeHolders = new Dictionary<uint, HashSet<int>>();
        foreach (var p in _c.Procs)
            foreach (var fdi in p.Fds)
            {
                if (!holders.TryGetValue(fdi.Id, out var h)) holders[fdi.Id] = h = [];
                h.Add(p.Pid);
                if (_c.Files.TryGetValue(fdi.Id, out var f) && f.Type == FdTypes.Pipe)
                {
                    if (!pipeHolders.TryGetValue(f.Pipe.PipeId, out var ph)) pipeHolders[f.Pipe.PipeId] = ph = [];
                    ph.Add(p.Pid);
                }
            }
        _c.CrossProcessIds = holders.Where(h => h.Value.Count > 1).Select(h => h.Key).ToHashSet();
        _c.CrossProcessPipes = pipeHolders.Where(h => h.Value.Count > 1).Select(h => h.Key).ToHashSet();
        if (_c.CrossProcessIds.Count > 0 || _c.CrossProcessPipes.Count > 0)
            Log.D($"restore: {_c.CrossProcessIds.Count} file(s) and {_c.CrossProcessPipes.Count} pipe(s) shared between processes");
    }

    /// <summary>
    /// Places at <paramref name="fd"/> of <paramref name="t"/> the description an earlier process
    /// already has, if any; false when this process is the first to need it.
    /// </summary>
    private bool PlaceShared(ProcessImage p, RestoreTask t, FileEntry file, int fd, bool cloexec)
    {
        int local;
        bool reopened = false;
        if (_c.CrispCopies.TryGetValue(file.Id, out local)) { }
        else if (file.Type == FdTypes.Pipe && _c.CrispPipes.TryGetValue(file.Pipe.PipeId, out var ends))
        {
            bool read = ((int)file.Pipe.Flags & LibC.O_ACCMODE) == LibC.O_RDONLY;
            local = read ? ends.R : ends.W;
            if (!OwnsPipeEnd(file.Pipe))
            {
                // Another description of this end holds the pipe's own: this one is a reopen, made by crisp.
                local = ReopenPipeEnd(local, read, file.Pipe);
                if (_c.CrossProcessIds.Contains(file.Id)) _c.CrispCopies[file.Id] = local;
                else reopened = true;
            }
        }
        else return false;
        int tmp;
        try { tmp = CrispFdIntoTask(p, t, local, $"crisp fd {local}"); }
        finally { if (reopened) LibC.close(local); }
        if (tmp != fd)
        {
            Dup(t, tmp, fd, cloexec);
            t.Call(Code, LibC.SYS_close, tmp);
        }
        else Dup(t, fd, fd, cloexec);
        return true;
    }

    /// <summary>crisp's fd <paramref name="local"/> as a new fd of <paramref name="t"/> (pidfd_getfd through crisp's pidfd in the task).</summary>
    private int CrispFdIntoTask(ProcessImage p, RestoreTask t, int local, string what)
    {
        // A task in a new pid namespace cannot pidfd_open crisp (outside it): it has crisp's pidfd from the stub,
        // until the files step of its fd table closes it.
        if (_c.SelfPidfd >= 0 && !_c.CrispPidfdIn.ContainsKey(p.Pid) && _c.FdTablesDone.Contains(p.Ids.FilesId))
            throw new CrispException($"process {p.Pid} in a new pid namespace needs {what} after its shared fd table was restored: not supported yet");
        if (_c.SelfPidfd >= 0 && !_c.CrispPidfdIn.ContainsKey(p.Pid)) _c.CrispPidfdIn[p.Pid] = _c.ExtraBase + _c.ExtraCrispFds.IndexOf(_c.SelfPidfd);
        if (!_c.CrispPidfdIn.TryGetValue(p.Pid, out int pidfd))
        {
            int first = (int)t.Check(Code, "pidfd_open(crisp)", LibC.SYS_pidfd_open, Environment.ProcessId, 0);
            // Above every fd number this process uses, and above its temporary pipe ends.
            pidfd = _c.ExtraBase + _c.ExtraCrispFds.Count + 2 * p.Fds.Count;
            // A process cloned from a restored parent (RestoreCow.cs) has the parent's fds too: the
            // lowest free number may be that one already (pidfds are CLOEXEC from the start).
            if (first != pidfd)
            {
                t.Check(Code, "dup3", SYS_dup3, first, pidfd, LibC.O_CLOEXEC);
                t.Call(Code, LibC.SYS_close, first);
            }
            _c.CrispPidfdIn[p.Pid] = pidfd;
        }
        return (int)t.Check(Code, $"pidfd_getfd({what})", LibC.SYS_pidfd_getfd, pidfd, local, 0);
    }


    /// <summary>
    /// A pipe end can have several open file descriptions (a reopen of /proc/PID/fd/N gives a new
    /// one, with flags of its own: zdtm pipe01, pipe02). The first description restored of each
    /// end gets the end pipe2 made; every other one is a reopen of it.
    /// </summary>
    private bool OwnsPipeEnd(PipeEntry pipe)
    {
        // LibC.O_LARGEFILE comes with an open() (bash's `exec 3< <(...)` opens /dev/fd/63): pipe2's ends never have it.
        if (((int)pipe.Flags & LibC.O_LARGEFILE) != 0) return false;
        var key = (pipe.PipeId, ((int)pipe.Flags & LibC.O_ACCMODE) == LibC.O_RDONLY);
        if (_c.PipeEndOwners.TryAdd(key, pipe.Id)) return true;
        return _c.PipeEndOwners[key] == pipe.Id;
    }

    private static int ReopenPipeEnd(int end, bool read, PipeEntry pipe) =>
        Errno.Check(LibC.open($"/proc/self/fd/{end}", (read ? LibC.O_RDONLY : LibC.O_WRONLY) | LibC.O_CLOEXEC, 0), "open", $"/proc/self/fd/{end} (a description of pipe:[{pipe.PipeId}])");

    /// <summary>After a process placed a shared description first: crisp keeps a copy for the others.</summary>
    private void KeepShared(RestoreTask t, FileEntry file, int fd)
    {
        bool pipeEnd = file.Type == FdTypes.Pipe && _c.PipeEndOwners.GetValueOrDefault((file.Pipe.PipeId, ((int)file.Pipe.Flags & LibC.O_ACCMODE) == LibC.O_RDONLY)) == file.Pipe.Id;
        if (!pipeEnd && _c.CrossProcessIds.Contains(file.Id) && !_c.CrispCopies.ContainsKey(file.Id))
            _c.CrispCopies[file.Id] = TakeFd(t, fd);
    }

    /// <summary>A pipe just made in <paramref name="t"/> (temporary ends r, w) that other processes use too.</summary>
    private void KeepSharedPipe(RestoreTask t, uint pipeId, int r, int w)
    {
        if (_c.CrossProcessPipes.Contains(pipeId) && !_c.CrispPipes.ContainsKey(pipeId))
            _c.CrispPipes[pipeId] = (TakeFd(t, r), TakeFd(t, w));
    }

    private static int TakeFd(RestoreTask t, int fd)
    {
        int pidfd = Errno.Check(LibC.pidfd_open(t.Pid), "pidfd_open", t.ToString());
        try { return Errno.Check(LibC.pidfd_getfd(pidfd, fd), "pidfd_getfd", $"fd {fd} of {t}"); }
        finally { LibC.close(pidfd); }
    }

    /// <summary>The process no longer needs crisp's pidfd.</summary>
    private void ForgetCrispPidfd(ProcessImage p, RestoreTask t)
    {
        if (_c.CrispPidfdIn.Remove(p.Pid, out int pidfd)) t.Call(Code, LibC.SYS_close, pidfd);
    }

    /// <summary>Closes crisp's copies (every process has its files, or the restore failed).</summary>
    private void CloseSharedCopies()
    {
        foreach (var fd in _c.CrispCopies.Values) LibC.close(fd);
        foreach (var (r, w) in _c.CrispPipes.Values) { LibC.close(r); LibC.close(w); }
        _c.CrispCopies.Clear();
        _c.CrispPipes.Clear();
        CloseMemfdInodes();
        CloseFifoHolds();
        CloseSharedAnon();
    }
}
