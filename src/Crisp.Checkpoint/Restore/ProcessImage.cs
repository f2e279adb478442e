using Crisp.Images;
using Crisp.Images.Proto;

namespace Crisp.Checkpoint.Restore;

/// <summary>Everything the images say about one process of the tree.</summary>
internal sealed class ProcessImage
{
    public required PstreeEntry Entry { get; init; }
    public required TaskKobjIdsEntry Ids { get; init; }
    public required MmEntry Mm { get; init; }
    /// <summary>The guard regions (VMA_AREA_GUARD pseudo-VMAs), taken out of <see cref="Mm"/>'s VMAs at load: they are no mappings.</summary>
    public List<VmaEntry> Guards { get; init; } = [];
    public required FsEntry? Fs { get; init; }
    public required List<FdinfoEntry> Fds { get; init; }
    /// <summary>
    /// core-TID per thread, the leader first. The tids are the dumped ones until the restore has
    /// created the threads, then the ones they have here (they differ when the tree owns its pid
    /// namespace); <see cref="DumpedTids"/> keeps the dumped ones.
    /// </summary>
    public required List<(int Tid, CoreEntry Core)> Threads { get; init; }

    /// <summary>The dumped pid until the process is created, then its pid here (in crisp's pid namespace).</summary>
    public int Pid { get; set; }
    /// <summary>The pid the images carry: as the tree sees it, inside its own pid namespace if it has one.</summary>
    public int DumpedPid => (int)Entry.Pid;
    public required IReadOnlyList<int> DumpedTids { get; init; }
    public int Ppid => (int)Entry.Ppid;
    public int Pgid => (int)Entry.Pgid;
    public int Sid => (int)Entry.Sid;
    public CoreEntry LeaderCore => Threads[0].Core;

    /// <summary>The live processes of the tree, pstree order; its zombies go to <paramref name="zombies"/>.</summary>
    public static List<ProcessImage> Load(ImageDir dir, List<ZombieImage> zombies)
    {
        var list = new List<ProcessImage>();
        foreach (var e in dir.ReadPstree())
        {
            int pid = (int)e.Pid;
            var tids = e.Threads.Count > 0 ? e.Threads.Select(t => (int)t).ToList() : [pid];
            if (tids[0] != pid)
            {
                tids.Remove(pid);
                tids.Insert(0, pid);
            }
            var threads = tids.Select(t => (t, dir.ReadCore(t))).ToList();
            if (threads[0].Item2.Tc?.TaskState == TaskStates.Zombie)
            {
                zombies.Add(ZombieImage.From(e, threads[0].Item2));
                continue;
            }
            var ids = threads[0].Item2.Ids ?? dir.ReadIds(pid);
            var mm = dir.ReadMm(pid);
            var guards = mm.Vmas.Where(v => (v.Status & VmaStatus.VMA_AREA_GUARD) != 0).ToList();
            foreach (var g in guards) mm.Vmas.Remove(g);
            FsEntry? fs = dir.Exists(ImageDir.FsName(pid)) ? dir.ReadFs(pid) : null;
            var fds = dir.Exists(ImageDir.FdinfoName(ids.FilesId)) ? dir.ReadFdinfo(ids.FilesId) : [];
            list.Add(new ProcessImage { Entry = e, Ids = ids, Mm = mm, Guards = guards, Fs = fs, Fds = fds, Threads = threads, Pid = pid, DumpedTids = tids });
        }
        if (list.Count == 0) throw new ImageException(dir.PathOf(ImageDir.PstreeName), "no processes");
        return list;
    }
}

/// <summary>
/// A child that had exited but was not reaped at dump (core: task_state TASK_DEAD, exit_code the
/// wait status; no mm, no files). Restore makes it again only to exit the same way.
/// </summary>
internal sealed record ZombieImage(int Pid, int Ppid, int Pgid, int Sid, int ExitStatus)
{
    public static ZombieImage From(PstreeEntry e, CoreEntry core)
    {
        if (e.Ppid == 0) throw new Crisp.Native.CrispException($"process {e.Pid} is a zombie without a parent in the tree: nothing could reap it");
        return new ZombieImage((int)e.Pid, (int)e.Ppid, (int)e.Pgid, (int)e.Sid, (int)core.Tc!.ExitCode);
    }
}
