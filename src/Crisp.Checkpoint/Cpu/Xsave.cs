using System.Buffers.Binary;
using System.Runtime.Intrinsics.X86;
using Crisp.Images.Proto;

namespace Crisp.Checkpoint.Cpu;

/// <summary>
/// The XSAVE area (PTRACE_GETREGSET NT_X86_XSTATE, standard non-compacted form) split into
/// CRIU's user_x86_fpregs_entry fields and put back together. Component offsets come from
/// CPUID leaf 0xD, as the kernel's own layout does.
/// </summary>
public static class Xsave
{
    private const int LegacySize = 512, HeaderOffset = 512;

    // XSAVE state components crisp carries (CRIU's field for each).
    private const int YmmComponent = 2, BndregsComponent = 3, BndcsrComponent = 4, OpmaskComponent = 5,
        ZmmHi256Component = 6, Hi16ZmmComponent = 7, PkruComponent = 9;

    private static (int Offset, int Size) Component(int i)
    {
        if (!X86Base.IsSupported) return (0, 0);
        var (size, offset, _, _) = X86Base.CpuId(0xD, i);
        return (offset, size);
    }

    public static UserX86FpregsEntry ToImage(ReadOnlySpan<byte> area)
    {
        if (area.Length < LegacySize) throw new ArgumentException($"xsave area of {area.Length} bytes is too small");
        var e = new UserX86FpregsEntry
        {
            Cwd = BinaryPrimitives.ReadUInt16LittleEndian(area),
            Swd = BinaryPrimitives.ReadUInt16LittleEndian(area[2..]),
            Twd = BinaryPrimitives.ReadUInt16LittleEndian(area[4..]),
            Fop = BinaryPrimitives.ReadUInt16LittleEndian(area[6..]),
            Rip = BinaryPrimitives.ReadUInt64LittleEndian(area[8..]),
            Rdp = BinaryPrimitives.ReadUInt64LittleEndian(area[16..]),
            Mxcsr = BinaryPrimitives.ReadUInt32LittleEndian(area[24..]),
            MxcsrMask = BinaryPrimitives.ReadUInt32LittleEndian(area[28..]),
        };
        AddU32(e.StSpace, area.Slice(32, 128));
        AddU32(e.XmmSpace, area.Slice(160, 256));
        AddU32(e.Padding, area.Slice(416, 96));
        if (area.Length < HeaderOffset + 64) return e;

        ulong xstateBv = BinaryPrimitives.ReadUInt64LittleEndian(area[HeaderOffset..]);
        var x = new UserX86XsaveEntry { XstateBv = xstateBv };
        AddU32(x.YmmhSpace, Slice(area, YmmComponent));
        AddU64(x.BndregState, Slice(area, BndregsComponent));
        AddU64(x.BndcsrState, Slice(area, BndcsrComponent));
        AddU64(x.OpmaskReg, Slice(area, OpmaskComponent));
        AddU64(x.ZmmUpper, Slice(area, ZmmHi256Component));
        AddU64(x.Hi16Zmm, Slice(area, Hi16ZmmComponent));
        AddU32(x.Pkru, Slice(area, PkruComponent));
        e.Xsave = x;
        return e;
    }

    /// <summary>
    /// Writes the image's state into <paramref name="area"/>, which holds the target task's
    /// current XSAVE area (so its size and the parts crisp does not carry are the kernel's).
    /// </summary>
    public static void FromImage(UserX86FpregsEntry e, Span<byte> area)
    {
        BinaryPrimitives.WriteUInt16LittleEndian(area, (ushort)e.Cwd);
        BinaryPrimitives.WriteUInt16LittleEndian(area[2..], (ushort)e.Swd);
        BinaryPrimitives.WriteUInt16LittleEndian(area[4..], (ushort)e.Twd);
        BinaryPrimitives.WriteUInt16LittleEndian(area[6..], (ushort)e.Fop);
        BinaryPrimitives.WriteUInt64LittleEndian(area[8..], e.Rip);
        BinaryPrimitives.WriteUInt64LittleEndian(area[16..], e.Rdp);
        BinaryPrimitives.WriteUInt32LittleEndian(area[24..], e.Mxcsr);
        BinaryPrimitives.WriteUInt32LittleEndian(area[28..], e.MxcsrMask);
        PutU32(e.StSpace, area.Slice(32, 128));
        PutU32(e.XmmSpace, area.Slice(160, 256));
        // bytes 464..511 (sw_reserved) describe the kernel's own layout: keep the kernel's.
        if (e.Xsave is null || area.Length < HeaderOffset + 64) return;
        var x = e.Xsave;
        // Only components this kernel's buffer holds (fpx_sw_bytes.xfeatures at 464 + 8); x87
        // and SSE always come from the legacy area written above.
        ulong supported = BinaryPrimitives.ReadUInt64LittleEndian(area[472..]);
        ulong bv = x.XstateBv & (supported == 0 ? ulong.MaxValue : supported);
        BinaryPrimitives.WriteUInt64LittleEndian(area[HeaderOffset..], bv | 3);
        PutU32(x.YmmhSpace, Slice(area, YmmComponent));
        PutU64(x.BndregState, Slice(area, BndregsComponent));
        PutU64(x.BndcsrState, Slice(area, BndcsrComponent));
        PutU64(x.OpmaskReg, Slice(area, OpmaskComponent));
        PutU64(x.ZmmUpper, Slice(area, ZmmHi256Component));
        PutU64(x.Hi16Zmm, Slice(area, Hi16ZmmComponent));
        PutU32(x.Pkru, Slice(area, PkruComponent));
    }

    private static ReadOnlySpan<byte> Slice(ReadOnlySpan<byte> area, int component)
    {
        var (off, size) = Component(component);
        return size == 0 || off + size > area.Length ? default : area.Slice(off, size);
    }

    private static Span<byte> Slice(Span<byte> area, int component)
    {
        var (off, size) = Component(component);
        return size == 0 || off + size > area.Length ? default : area.Slice(off, size);
    }

    private static void AddU32(Google.Protobuf.Collections.RepeatedField<uint> f, ReadOnlySpan<byte> b)
    {
        for (int i = 0; i + 4 <= b.Length; i += 4) f.Add(BinaryPrimitives.ReadUInt32LittleEndian(b[i..]));
    }

    private static void AddU64(Google.Protobuf.Collections.RepeatedField<ulong> f, ReadOnlySpan<byte> b)
    {
        for (int i = 0; i + 8 <= b.Length; i += 8) f.Add(BinaryPrimitives.ReadUInt64LittleEndian(b[i..]));
    }

    private static void PutU32(Google.Protobuf.Collections.RepeatedField<uint> f, Span<byte> b)
    {
        for (int i = 0; i < f.Count && (i + 1) * 4 <= b.Length; i++) BinaryPrimitives.WriteUInt32LittleEndian(b[(i * 4)..], f[i]);
    }

    private static void PutU64(Google.Protobuf.Collections.RepeatedField<ulong> f, Span<byte> b)
    {
        for (int i = 0; i < f.Count && (i + 1) * 8 <= b.Length; i++) BinaryPrimitives.WriteUInt64LittleEndian(b[(i * 8)..], f[i]);
    }
}
