using Crisp.Images.Proto;
using Crisp.Native;

namespace Crisp.Checkpoint.Dump;

/// <summary>
/// An inotify watch on a file deleted since (zdtm inotify00): the watched inode has no path, so
/// the watch is put back on the ghost of that inode, which some fd or mapping of the tree must
/// hold open (the ghost is made from it). The watch keeps its inode number and device; restore
/// finds the ghost by them (CRIU's lookup_ghost_remap). One no ghost stands for is refused once
/// every process is collected.
/// </summary>
internal sealed partial class FileTable
{
    private readonly List<(uint SDev, ulong Ino, uint Wd, string Where)> _ghostWatches = [];

    private void NoteGhostWatches(FileEntry e, string where)
    {
        if (e.Ify == null) return;
        foreach (var w in e.Ify.Wd)
            if (!w.FHandle.HasPath) _ghostWatches.Add((w.SDev, w.IIno, w.Wd, where));
    }

    /// <summary>Once every process was collected: refuses a watch on a deleted inode that no ghost holds.</summary>
    public void FinishWatches()
    {
        foreach (var (sdev, ino, wd, where) in _ghostWatches)
            if (!_ghostIds.ContainsKey((UserDev(sdev), ino)))
                throw new CrispException($"{where} is an inotify whose watch {wd} is on inode {ino}, deleted and not held open by the tree: not supported (nothing to watch again)");
    }

    /// <summary>A kernel dev_t as fdinfo prints it (major &lt;&lt; 20 | minor) in glibc's st_dev encoding.</summary>
    internal static ulong UserDev(uint sdev)
    {
        ulong major = sdev >> 20, minor = sdev & 0xfffff;
        return ((major & 0xfff) << 8) | (minor & 0xff) | ((minor & ~0xffUL) << 12) | ((major & ~0xfffUL) << 32);
    }
}
