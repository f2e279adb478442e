using System.Buffers.Binary;
using Crisp.Images;

namespace Crisp.PageServer.Protocol;

// CRIU's page-server wire format (criu/page-xfer.c), a fact of the protocol we must match so
// that crisp and criu can talk to each other:
//
//   struct page_server_iov { u32 cmd; /* 4 bytes padding */ u64 nr_pages; u64 vaddr; u64 dst_id; }
//
// 32 bytes, host byte order (little endian on x86-64, the only architecture crisp supports).
// cmd = flags << 16 | op; for ADD_F the flags are the pagemap entry flags (PE_*).
// dst_id = id << 8 | type for the receive-side commands (OPEN2, ADD_F, ...), but a lazy GET
// carries the plain pid in dst_id (CRIU's lazy-pages daemon sends its page_read's img_id, which
// for a task pagemap is the pid, and the server looks the task up by that value directly).

/// <summary>One 32-byte page-server message header.</summary>
public readonly record struct PageServerIov(uint Cmd, ulong NrPages, ulong Vaddr, ulong DstId)
{
    /// <summary>Size on the wire (u32 cmd, 4 bytes padding, three u64).</summary>
    public const int Size = 32;

    public const int PageSize = 4096;

    private const int CmdBits = 16;
    private const int TypeBits = 8;

    public PageServerOp Op => (PageServerOp)(Cmd & 0xFFFF);

    /// <summary>The flags half of cmd (PE_* for ADD_F).</summary>
    public uint Flags => Cmd >> CmdBits;

    public PagemapFlags PagemapFlags => (PagemapFlags)Flags;

    public ulong Length => checked(NrPages * PageSize);

    public static uint EncodeCmd(PageServerOp op, uint flags = 0) => flags << CmdBits | (ushort)op;

    public static ulong EncodeDstId(PagemapKind kind, ulong id) => id << TypeBits | (byte)kind;

    /// <summary>
    /// Splits dst_id into (kind, id). Older CRIUs put their CR_FD_* enum values in the type byte;
    /// those numbers are mapped as CRIU itself does. Returns false for an unknown type.
    /// </summary>
    public static bool TryDecodeDstId(ulong dstId, out PagemapKind kind, out ulong id)
    {
        id = dstId >> TypeBits;
        switch ((byte)dstId)
        {
            case 1: case 10: case 11: case 16: case 17:
                kind = PagemapKind.Process;
                return true;
            case 2: case 27: case 28: case 29: case 32: case 33: case 34:
                kind = PagemapKind.Shmem;
                return true;
            default:
                kind = default;
                return false;
        }
    }

    public static PageServerIov Open2(PagemapKind kind, ulong id) =>
        new(EncodeCmd(PageServerOp.Open2), 0, 0, EncodeDstId(kind, id));

    public static PageServerIov Parent(PagemapKind kind, ulong id) =>
        new(EncodeCmd(PageServerOp.Parent), 0, 0, EncodeDstId(kind, id));

    public static PageServerIov AddF(PagemapFlags flags, ulong vaddr, ulong nrPages, ulong dstId) =>
        new(EncodeCmd(PageServerOp.AddF, (uint)flags), nrPages, vaddr, dstId);

    /// <summary>A lazy fetch of <paramref name="nrPages"/> pages of task <paramref name="pid"/> (dst_id is the plain pid).</summary>
    public static PageServerIov Get(int pid, ulong vaddr, ulong nrPages) =>
        new(EncodeCmd(PageServerOp.Get), nrPages, vaddr, (ulong)pid);

    public static PageServerIov Close(bool force = false) =>
        new(EncodeCmd(force ? PageServerOp.ForceClose : PageServerOp.Close), 0, 0, 0);

    public void WriteTo(Span<byte> destination)
    {
        if (destination.Length < Size)
            throw new ArgumentException($"need {Size} bytes", nameof(destination));
        BinaryPrimitives.WriteUInt32LittleEndian(destination, Cmd);
        BinaryPrimitives.WriteUInt32LittleEndian(destination[4..], 0);
        BinaryPrimitives.WriteUInt64LittleEndian(destination[8..], NrPages);
        BinaryPrimitives.WriteUInt64LittleEndian(destination[16..], Vaddr);
        BinaryPrimitives.WriteUInt64LittleEndian(destination[24..], DstId);
    }

    /// <summary>Reads a header; the padding bytes are ignored (CRIU leaves them uninitialised on the stack).</summary>
    public static PageServerIov Read(ReadOnlySpan<byte> source)
    {
        if (source.Length < Size)
            throw new ArgumentException($"need {Size} bytes", nameof(source));
        return new PageServerIov(
            BinaryPrimitives.ReadUInt32LittleEndian(source),
            BinaryPrimitives.ReadUInt64LittleEndian(source[8..]),
            BinaryPrimitives.ReadUInt64LittleEndian(source[16..]),
            BinaryPrimitives.ReadUInt64LittleEndian(source[24..]));
    }

    public override string ToString() =>
        $"{Op}(flags 0x{Flags:x}, nr_pages {NrPages}, vaddr 0x{Vaddr:x}, dst_id 0x{DstId:x})";
}
