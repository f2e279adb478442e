using Crisp.Checkpoint.Namespaces;
using Crisp.Images;
using Crisp.Images.Proto;
using Crisp.Native;

namespace Crisp.Checkpoint.Dump;

/// <summary>The images of the IPC and time namespaces a tree owns (TreeNamespaces.cs decides which).</summary>
internal static class OwnedNamespaces
{
    public static void Write(int root, TreeNamespaces ns, TaskKobjIdsEntry ids, IEnumerable<(int Pid, VmaEntry Vma)> vmas, ImageDir dir)
    {
        var sysv = vmas.Where(v => (v.Vma.Status & VmaStatus.VMA_AREA_SYSVIPC) != 0).ToList();
        if (sysv.Count > 0 && !ns.OwnIpc)
        {
            var (pid, v) = sysv[0];
            throw new CrispException($"process {pid}: mapping 0x{v.Start:x}-0x{v.End:x} is an attachment of System V shared memory segment {v.Shmid} " +
                                     "of the host's IPC namespace: not supported (crisp dumps SysV objects of an IPC namespace the tree owns)");
        }
        if (ns.OwnIpc)
        {
            var ipc = IpcNamespace.Dump(root, dir);
            foreach (var (pid, v) in sysv)
            {
                var seg = ipc.Shm.FirstOrDefault(s => s.Desc.Id == v.Shmid)
                    ?? throw new CrispException($"process {pid}: mapping 0x{v.Start:x}-0x{v.End:x} attaches System V segment {v.Shmid}, which its IPC namespace does not list");
                ulong whole = (seg.Size + 4095) & ~4095UL;
                if (v.Pgoff != 0 || v.End - v.Start != whole)
                    throw new CrispException($"process {pid}: mapping 0x{v.Start:x}-0x{v.End:x} covers part of System V segment {v.Shmid} ({seg.Size} bytes, offset 0x{v.Pgoff:x}): " +
                                             "only whole attachments are supported");
            }
            ipc.Write(dir, ids.IpcNsId);
        }
        if (ns.OwnTime) dir.WriteTimens(TimeNamespace.Dump(root), ids.TimeNsId);
    }
}
