using System.Buffers.Binary;
using System.Text;

namespace Crisp.Checkpoint.Restore;

/// <summary>One dynamic symbol of a vDSO: its name, its offset from the vDSO's first page, size and ELF type.</summary>
internal readonly record struct VdsoSymbol(string Name, ulong Offset, ulong Size, bool IsFunction);

/// <summary>
/// The dynamic symbols of a vDSO image. Two vDSOs of one kernel build can differ in a few bytes
/// where the kernel patched CPU-specific alternatives at boot; what a restored process depends
/// on is that every entry point sits where it did, which comparing these tells.
/// </summary>
internal static class VdsoSymbols
{
    private const uint SHT_DYNSYM = 11, PT_LOAD = 1;
    private const int STT_FUNC = 2;

    /// <summary>The defined symbols (undefined and unnamed ones left out), or null when this is not a vDSO ELF crisp can read.</summary>
    public static List<VdsoSymbol>? Read(ReadOnlySpan<byte> elf)
    {
        if (elf.Length < 64 || elf[0] != 0x7f || elf[1] != 'E' || elf[2] != 'L' || elf[3] != 'F' || elf[4] != 2) return null;
        // Symbol values are addresses in the vDSO's link-time layout: offsets from its first PT_LOAD.
        ulong phoff = BinaryPrimitives.ReadUInt64LittleEndian(elf[0x20..]);
        int phentsize = BinaryPrimitives.ReadUInt16LittleEndian(elf[0x36..]);
        int phnum = BinaryPrimitives.ReadUInt16LittleEndian(elf[0x38..]);
        ulong shoff = BinaryPrimitives.ReadUInt64LittleEndian(elf[0x28..]);
        int shentsize = BinaryPrimitives.ReadUInt16LittleEndian(elf[0x3A..]);
        int shnum = BinaryPrimitives.ReadUInt16LittleEndian(elf[0x3C..]);
        if (phentsize < 56 || phoff + (ulong)(phnum * phentsize) > (ulong)elf.Length) return null;
        if (shentsize < 64 || shoff + (ulong)(shnum * shentsize) > (ulong)elf.Length) return null;
        ulong? linkBase = null;
        for (int i = 0; i < phnum && linkBase == null; i++)
        {
            var ph = elf.Slice((int)phoff + i * phentsize, 56);
            if (BinaryPrimitives.ReadUInt32LittleEndian(ph) == PT_LOAD)
                linkBase = BinaryPrimitives.ReadUInt64LittleEndian(ph[0x10..]) & ~0xFFFUL;
        }
        if (linkBase == null) return null;
        for (int i = 0; i < shnum; i++)
        {
            var sh = elf.Slice((int)shoff + i * shentsize, 64);
            if (BinaryPrimitives.ReadUInt32LittleEndian(sh[4..]) != SHT_DYNSYM) continue;
            ulong off = BinaryPrimitives.ReadUInt64LittleEndian(sh[0x18..]);
            ulong size = BinaryPrimitives.ReadUInt64LittleEndian(sh[0x20..]);
            int link = (int)BinaryPrimitives.ReadUInt32LittleEndian(sh[0x28..]);
            if (link >= shnum || off + size > (ulong)elf.Length) return null;
            var str = elf.Slice((int)shoff + link * shentsize, 64);
            ulong stroff = BinaryPrimitives.ReadUInt64LittleEndian(str[0x18..]);
            ulong strsize = BinaryPrimitives.ReadUInt64LittleEndian(str[0x20..]);
            if (stroff + strsize > (ulong)elf.Length) return null;
            var strtab = elf.Slice((int)stroff, (int)strsize);
            var list = new List<VdsoSymbol>();
            for (ulong s = off; s + 24 <= off + size; s += 24)
            {
                var sym = elf.Slice((int)s, 24);
                int name = (int)BinaryPrimitives.ReadUInt32LittleEndian(sym);
                if (name >= strtab.Length) return null;
                int end = strtab[name..].IndexOf((byte)0);
                string n = Encoding.ASCII.GetString(strtab.Slice(name, end < 0 ? strtab.Length - name : end));
                ushort shndx = BinaryPrimitives.ReadUInt16LittleEndian(sym[6..]);
                ulong value = BinaryPrimitives.ReadUInt64LittleEndian(sym[8..]);
                if (n.Length == 0 || shndx == 0 || value < linkBase) continue;
                list.Add(new VdsoSymbol(n, value - linkBase.Value, BinaryPrimitives.ReadUInt64LittleEndian(sym[16..]), (sym[4] & 0xf) == STT_FUNC));
            }
            return list;
        }
        return null;
    }
}
