using Crisp.Images.Proto;
using Crisp.Native;
using Crisp.Native.ProcFs;

namespace Crisp.Checkpoint.Dump;

/// <summary>
/// pidfds (pidfd_open, clone's CLONE_PIDFD), in CRIU's pidfd entry. The fdinfo's "Pid:" line names
/// the process in crisp's pid namespace, -1 once it is gone (exited and reaped). A live target
/// must be a process of the tree (restore opens the pidfd on it again); a dead one is recorded
/// with its inode, which every pidfd of that one process shares, so restore can make them one
/// dead process again.
/// </summary>
internal sealed unsafe partial class FileTable
{
    private const int PIDFD_THREAD = LibC.O_EXCL;

    /// <summary>Host pid → the pid as the tree sees it, or null when the process is not in the tree.</summary>
    public Func<int, int?> TreePid { get; set; } = _ => null;

    private static bool IsPidfdLink(string link) => link == "anon_inode:[pidfd]";

    private FileEntry CollectPidfd(uint id, int pid, int pidfd, int fd, int flags, FdInfo info, ulong ino)
    {
        string where = $"process {pid}: fd {fd} (a pidfd)";
        if ((flags & PIDFD_THREAD) != 0)
            throw new CrispException($"{where} was opened with PIDFD_THREAD (it names one thread): not supported yet");
        if (!info.Fields.TryGetValue("Pid", out var pidText) || !int.TryParse(pidText.Trim(), out int target))
            throw new CrispException($"{where} has no 'Pid' line in its fdinfo (kernel too old?)");
        int nspid = -1;
        if (target > 0)
            nspid = TreePid(target) ?? throw new CrispException($"{where} refers to process {target}, which is outside the dumped tree");
        else if (target == 0)
            throw new CrispException($"{where} refers to a process in a pid namespace crisp cannot see");
        return new FileEntry
        {
            Type = FdTypes.Pidfd, Id = id,
            Pidfd = new PidfdEntry { Id = id, Ino = (uint)ino, Flags = (uint)(flags & ~LibC.O_RDWR), Nspid = nspid, Fown = Owner(pid, pidfd, fd) },
        };
    }
}
