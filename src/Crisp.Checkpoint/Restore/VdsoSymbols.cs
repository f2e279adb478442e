using System.Buffers.Binary;
using System.Text;

namespace Crisp.Checkpoint.Restore;

/// <summary>
/// The dynamic symbols of a vDSO image (name, value, size). Two vDSOs of one kernel build can
/// differ in a few bytes where the kernel patched CPU-specific alternatives at boot; what a
/// restored process depends on is that every entry point sits where it did, which this compares.
/// </summary>
internal static class VdsoSymbols
{
    public static List<(string Name, ulong Value, ulong Size)>? Read(ReadOnlySpan<byte> elf)
    {
        if (elf.Length < 64 || elf[0] != 0x7f || elf[1] != 'E' || elf[2] != 'L' || elf[3] != 'F') return null;
        ulong shoff = BinaryPrimitives.ReadUInt64LittleEndian(elf[0x28..]);
        int shentsize = BinaryPrimitives.ReadUInt16LittleEndian(elf[0x3A..]);
        int shnum = BinaryPrimitives.ReadUInt16LittleEndian(elf[0x3C..]);
        if (shentsize < 64 || shoff + (ulong)(shnum * shentsize) > (ulong)elf.Length) return null;
        for (int i = 0; i < shnum; i++)
        {
            var sh = elf.Slice((int)shoff + i * shentsize, 64);
            if (BinaryPrimitives.ReadUInt32LittleEndian(sh[4..]) != 11) continue; // SHT_DYNSYM
            ulong off = BinaryPrimitives.ReadUInt64LittleEndian(sh[0x18..]);
            ulong size = BinaryPrimitives.ReadUInt64LittleEndian(sh[0x20..]);
            int link = (int)BinaryPrimitives.ReadUInt32LittleEndian(sh[0x28..]);
            if (link >= shnum || off + size > (ulong)elf.Length) return null;
            var str = elf.Slice((int)shoff + link * shentsize, 64);
            ulong stroff = BinaryPrimitives.ReadUInt64LittleEndian(str[0x18..]);
            ulong strsize = BinaryPrimitives.ReadUInt64LittleEndian(str[0x20..]);
            if (stroff + strsize > (ulong)elf.Length) return null;
            var strtab = elf.Slice((int)stroff, (int)strsize);
            var list = new List<(string, ulong, ulong)>();
            for (ulong s = off; s + 24 <= off + size; s += 24)
            {
                var sym = elf.Slice((int)s, 24);
                int name = (int)BinaryPrimitives.ReadUInt32LittleEndian(sym);
                if (name >= strtab.Length) return null;
                int end = strtab[name..].IndexOf((byte)0);
                string n = Encoding.ASCII.GetString(strtab.Slice(name, end < 0 ? strtab.Length - name : end));
                list.Add((n, BinaryPrimitives.ReadUInt64LittleEndian(sym[8..]), BinaryPrimitives.ReadUInt64LittleEndian(sym[16..])));
            }
            return list;
        }
        return null;
    }
}
