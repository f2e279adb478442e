using Crisp.Images.Proto;
using Crisp.Native;
using Crisp.Native.ProcFs;

namespace Crisp.Checkpoint.Dump;

/// <summary>
/// Mappings of a packet socket's rings (CRIU's VMA_AREA_SOCKET). A VMA is read before the fds, so
/// it is noted with its socket's inode here and gets the socket's file id in shmid (as CRIU writes
/// it) once every process's fds are known. A ring mapped by a process while no process of the
/// tree holds the socket by an fd any more is refused (CRIU refuses it too).
/// </summary>
internal sealed partial class FileTable
{
    private readonly List<(int Pid, string Vma, ulong Ino, VmaEntry Entry)> _socketMaps = [];

    public void SocketMapping(int pid, Vma v, VmaEntry entry) => _socketMaps.Add((pid, v.ToString(), v.Inode, entry));

    private void ResolveSocketMappings()
    {
        foreach (var (pid, vma, ino, entry) in _socketMaps)
        {
            entry.Shmid = _sockets.PacketSocketId((uint)ino)
                ?? throw new CrispException($"process {pid}: mapping {vma} maps socket:[{ino}], which is not a packet socket the tree holds by an fd: not supported");
        }
    }
}
