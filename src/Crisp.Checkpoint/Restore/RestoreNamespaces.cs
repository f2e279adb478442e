using Crisp.Checkpoint.Namespaces;
using Crisp.Images;
using Crisp.Images.Proto;
using Crisp.Native;

namespace Crisp.Checkpoint.Restore;

/// <summary>
/// The IPC and time namespaces a tree owned (Namespaces/IpcNamespace.cs, TimeNamespace.cs):
/// the time namespace is made in the stub before it clones the root, the IPC namespace with
/// the root (CLONE_NEWIPC) and filled before any process maps its memory, so attachments of
/// its segments can be made again in place.
/// </summary>
internal sealed partial class RestoreSession
{
    private const ulong CLONE_NEWIPC = 0x08000000;
    private const long CLONE_NEWTIME = 0x80, SYS_unshare = 272;

    private void ReadIpcNamespace(uint id)
    {
        if (!IpcNamespaceImage.ExistsIn(_c.Dir, id))
            throw new ImageException(_c.Dir.PathOf(IpcNamespaceImage.VarName(id)), "the tree owned an IPC namespace but its images are missing");
        _c.Ipc = IpcNamespaceImage.Read(_c.Dir, id);
        Log.I($"the tree owned its IPC namespace: {_c.Ipc.Shm.Count} segment(s), {_c.Ipc.Sem.Count} semaphore set(s), {_c.Ipc.Msg.Count} message queue(s)");
    }

    private void ReadTimeNamespace(uint id)
    {
        if (!_c.Dir.Exists(ImageDir.TimensName(id)))
            throw new ImageException(_c.Dir.PathOf(ImageDir.TimensName(id)), "the tree owned a time namespace but its image is missing");
        _c.Timens = _c.Dir.ReadTimens(id);
    }

    /// <summary>unshare(CLONE_NEWTIME) in the stub: its children (the root, and so the tree) go into a new time namespace whose offsets are set before the first of them.</summary>
    private void MakeTimeNamespace(RestoreTask stub)
    {
        stub.Check(Code, "unshare(CLONE_NEWTIME)", SYS_unshare, CLONE_NEWTIME);
        TimeNamespace.SetOffsets(stub.Pid, _c.Timens!);
    }

    private void FillIpcNamespace(RestoreTask root) => IpcNamespace.Restore(root.Pid, _c.Ipc!, _c.Dir);

    /// <summary>shmat of the restored segment at the dumped address, read-only or executable as the VMA was.</summary>
    private void AttachSysvShm(ProcessImage p, RestoreTask leader, VmaEntry v)
    {
        const int SHM_RDONLY = 0x1000, SHM_EXEC = 0x8000;
        int flags = ((v.Prot & LibC.PROT_WRITE) == 0 ? SHM_RDONLY : 0) | ((v.Prot & LibC.PROT_EXEC) != 0 ? SHM_EXEC : 0);
        string what = $"System V segment {v.Shmid} at 0x{v.Start:x} in process {p.Pid}";
        if (_c.Ipc!.Shm.All(s => s.Desc.Id != v.Shmid))
            throw new ImageException(_c.Dir.Path, $"{what}: the segment is not in the IPC namespace's images");
        long at = leader.Check(Code, $"shmat({what})", SysvIpc.SYS_shmat, (long)v.Shmid, (long)v.Start, flags);
        if ((ulong)at != v.Start) throw new CrispException($"shmat placed {what} at 0x{at:x}");
        if ((v.Prot & LibC.PROT_READ) == 0)
            leader.Check(Code, $"mprotect({what})", LibC.SYS_mprotect, (long)v.Start, (long)(v.End - v.Start), v.Prot);
    }
}
