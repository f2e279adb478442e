using System.Buffers.Binary;
using Crisp.Checkpoint.Restore;
using Crisp.Native;
using Xunit;

namespace Crisp.Integration.Tests.Restore;

/// <summary>The vDSO proxy's pure parts: symbols of a real vDSO, the jumps written, where the running vDSO is parked.</summary>
[Trait("Category", "Unit")]
public sealed class VdsoProxyTests
{
    private static byte[] OwnVdso(out ulong start)
    {
        var v = Crisp.Native.ProcFs.Proc.Maps(Environment.ProcessId).Single(m => m.IsVdso);
        start = v.Start;
        var bytes = new byte[v.Length];
        Crisp.Inject.RemoteMemory.Read(Environment.ProcessId, v.Start, bytes);
        return bytes;
    }

    [Fact]
    public void The_running_vdso_exports_the_time_functions_as_offsets()
    {
        var syms = VdsoSymbols.Read(OwnVdso(out _))!;
        Assert.NotNull(syms);
        foreach (var name in new[] { "__vdso_clock_gettime", "__vdso_gettimeofday", "__vdso_time", "__vdso_getcpu" })
        {
            var s = Assert.Single(syms, x => x.Name == name);
            Assert.True(s.IsFunction);
            Assert.InRange(s.Offset, 1UL, 0x4000UL);
        }
    }

    [Fact]
    public void Every_entry_point_jumps_to_the_same_symbol_of_the_running_vdso()
    {
        var image = OwnVdso(out ulong start);
        var syms = VdsoSymbols.Read(image)!;
        ulong runningBase = start + 0x10_0000; // near: rel32 jumps
        var patched = VdsoProxy.Redirect(image, start, syms, syms, runningBase, out int redirected, out int fallbacks);
        Assert.Equal(0, fallbacks);
        Assert.Equal(syms.Where(s => s.IsFunction).Select(s => s.Offset).Distinct().Count(), redirected);
        foreach (var s in syms.Where(s => s.IsFunction))
        {
            Assert.Equal(0xE9, patched[s.Offset]);
            long rel = BinaryPrimitives.ReadInt32LittleEndian(patched.AsSpan((int)s.Offset + 1));
            Assert.Equal(runningBase + s.Offset, (ulong)((long)(start + s.Offset + 5) + rel));
        }
        // Far away: movabs rax, target; jmp rax.
        ulong far = start - 0x1000_0000_0000;
        patched = VdsoProxy.Redirect(image, start, syms, syms, far, out _, out _);
        var cgt = syms.First(s => s.Name == "__vdso_clock_gettime");
        Assert.Equal(new byte[] { 0x48, 0xB8 }, patched.AsSpan((int)cgt.Offset, 2).ToArray());
        Assert.Equal(far + cgt.Offset, BinaryPrimitives.ReadUInt64LittleEndian(patched.AsSpan((int)cgt.Offset + 2)));
        Assert.Equal(new byte[] { 0xFF, 0xE0 }, patched.AsSpan((int)cgt.Offset + 10, 2).ToArray());
    }

    [Fact]
    public void A_missing_time_function_becomes_its_system_call_and_an_unknown_one_is_refused()
    {
        var image = OwnVdso(out ulong start);
        var syms = VdsoSymbols.Read(image)!;
        var withoutTime = syms.Where(s => s.Name is not ("time" or "__vdso_time")).ToList();
        var patched = VdsoProxy.Redirect(image, start, syms, withoutTime, start + 0x10_0000, out _, out int fallbacks);
        Assert.Equal(1, fallbacks);
        var t = syms.First(s => s.Name == "__vdso_time");
        Assert.Equal(new byte[] { 0xB8, 201, 0, 0, 0, 0x0F, 0x05, 0xC3 }, patched.AsSpan((int)t.Offset, 8).ToArray());

        var extra = syms.Append(new VdsoSymbol("__vdso_frobnicate", syms.Max(s => s.Offset) + 0x40, 16, true)).ToList();
        var e = Assert.Throws<CrispException>(() => VdsoProxy.Redirect(image, start, extra, syms, start + 0x10_0000, out _, out _));
        Assert.Contains("__vdso_frobnicate", e.Message);
    }

    [Fact]
    public void The_running_vdso_is_parked_above_the_highest_mapping_below_the_stack()
    {
        (ulong, ulong)[] busy = [(0x5555_0000_0000, 0x5555_0001_0000), (0x7f00_0000_0000, 0x7f00_0010_0000), (0x7ffd_0000_0000, 0x7ffd_0002_1000)];
        ulong park = VdsoProxy.ChoosePark(busy, 0x8000, 0x7ffd_0000_0000, 8 << 20);
        Assert.Equal(0x7f00_0010_1000UL, park);
        // No room below the stack: the top of the highest other gap that fits.
        (ulong, ulong)[] tight = [(0x10000, 0x5555_0000_0000), (0x5555_0001_0000, 0x7ffd_0000_0000 - 0x4000), (0x7ffd_0000_0000, 0x7fff_ffff_f000)];
        park = VdsoProxy.ChoosePark(tight, 0x8000, 0x7ffd_0000_0000, 8 << 20);
        Assert.Equal(0x5555_0001_0000UL - 0x8000 - 0x1000, park);
        foreach (var (s, e) in tight) Assert.False(park < e && s < park + 0x8000);
    }
}
