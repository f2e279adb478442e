using Crisp.Images;
using Crisp.Images.Proto;
using Crisp.Native;
using Crisp.Native.ProcFs;

namespace Crisp.Checkpoint.Dump;

/// <summary>
/// The shmem file behind a shared anonymous mapping, once it is more than a mapping: opened as an
/// fd through /proc/PID/map_files (zdtm shmemfd), or mapped privately or at an offset from such an
/// fd (shmemfd-priv). Such a file is dumped as a memfd (named "/dev/zero", as CRIU does), and
/// every mapping of it, the MAP_SHARED|MAP_ANONYMOUS ones included, becomes a mapping of that
/// memfd (VMA_AREA_MEMFD, shmid = a memfd file entry), so that restore makes one object for all
/// of them and the bytes are written once, with the memfd. Shared anonymous memory nobody holds
/// that way stays as it was (VMA_ANON_SHARED, SharedAnonMemory.cs).
/// </summary>
internal sealed partial class FileTable
{
    private readonly List<(int Pid, Vma Vma, VmaEntry Entry)> _sharedAnonMaps = [];

    public void SharedAnonMapping(int pid, Vma v, VmaEntry entry) => _sharedAnonMaps.Add((pid, v, entry));

    /// <summary>Once every process was collected: turns the shared anonymous mappings of a shmem file dumped as a memfd into mappings of it.</summary>
    public void FinishSharedAnon(SharedAnonMemory sharedAnon)
    {
        foreach (var (pid, v, entry) in _sharedAnonMaps)
        {
            if (!_memfdInodes.ContainsKey(v.Inode)) continue;
            bool writable = (v.Flags & VmFlags.mw) != 0;
            entry.Shmid = MemfdForMapping(pid, v, writable ? LibC.O_RDWR : LibC.O_RDONLY);
            entry.Status = (entry.Status & ~VmaStatus.VMA_ANON_SHARED) | VmaStatus.VMA_AREA_MEMFD | VmaStatus.VMA_FILE_SHARED;
            entry.Flags &= ~(uint)LibC.MAP_ANONYMOUS;
            entry.Fdflags = MemoryDump.MappedFileMode(pid, v);
            sharedAnon.Drop(v.Inode);
        }
    }
}
