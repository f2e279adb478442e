using System.Buffers.Binary;
using Crisp.Images;

namespace Crisp.PageServer.Protocol;

/// <summary>The <c>type</c> byte of dst_id.</summary>
public enum PagemapKind : byte
{
    /// <summary>PS_TYPE_PID: a process pagemap, id = pid (pagemap-PID.img).</summary>
    Process = 1,
    /// <summary>PS_TYPE_SHMEM: a shared-memory pagemap, id = shmid (pagemap-shmem-ID.img).</summary>
    Shmem = 2,
}
