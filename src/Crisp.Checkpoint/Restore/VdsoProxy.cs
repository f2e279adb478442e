using System.Buffers.Binary;
using Crisp.Native;

namespace Crisp.Checkpoint.Restore;

/// <summary>
/// A dumped vDSO kept as a proxy for the running kernel's. A process caches pointers into its
/// vDSO (glibc resolves clock_gettime, gettimeofday, time, getcpu once at start-up), so when the
/// kernel that restores it has another vDSO (other build: other symbols, offsets, sizes or vvar
/// layout) the dumped vDSO's code goes back at its dumped address and each entry point it
/// exports gets a jump to the same symbol of the running kernel's vDSO, which is parked at an
/// address free in the dumped layout. (CRIU does the same: criu/pie/parasite-vdso.c.)
///
/// The dumped [vvar] range gets a read-only zero page instead of the kernel's data: a thread
/// that was stopped in the middle of a vDSO function at dump time reads clock_mode 0
/// (VDSO_CLOCKMODE_NONE) there and falls back to the system call instead of faulting.
/// </summary>
internal static class VdsoProxy
{
    public const ulong PageSize = 4096;

    /// <summary>
    /// Entry points without a counterpart in the running vDSO become the system call they stand
    /// for: same arguments, same result, only slower.
    /// </summary>
    private static readonly Dictionary<string, int> SyscallFallback = new()
    {
        ["clock_gettime"] = 228, ["__vdso_clock_gettime"] = 228,
        ["gettimeofday"] = 96, ["__vdso_gettimeofday"] = 96,
        ["time"] = 201, ["__vdso_time"] = 201,
        ["getcpu"] = 309, ["__vdso_getcpu"] = 309,
        ["clock_getres"] = 229, ["__vdso_clock_getres"] = 229,
    };

    /// <summary>
    /// Whether the running vDSO can simply be moved where the dumped one was: the same size, the
    /// same symbols at the same offsets, and [vvar] of the same size at the same distance.
    /// </summary>
    public static bool Matches(List<VdsoSymbol> dumped, List<VdsoSymbol> running, ulong dumpedVdsoSize, ulong runningVdsoSize,
        ulong dumpedVvarSize, ulong runningVvarSize, long dumpedVvarToVdso, long runningVvarToVdso)
    {
        if (dumpedVdsoSize != runningVdsoSize) return false;
        if (dumpedVvarSize != 0 && (dumpedVvarSize != runningVvarSize || dumpedVvarToVdso != runningVvarToVdso)) return false;
        return dumped.SequenceEqual(running);
    }

    /// <summary>
    /// The dumped vDSO image with every exported function redirected to the running vDSO at
    /// <paramref name="runningBase"/>: a 5-byte <c>jmp rel32</c> when the target is within ±2 GiB,
    /// otherwise <c>movabs rax, target; jmp rax</c> (12 bytes). Aliases (clock_gettime and
    /// __vdso_clock_gettime share an address) are patched once. A patch that would run into
    /// another entry point, or an entry point with neither a counterpart nor a system call to
    /// stand for it, is refused.
    /// </summary>
    public static byte[] Redirect(ReadOnlySpan<byte> dumpedImage, ulong dumpedBase, List<VdsoSymbol> dumped,
        List<VdsoSymbol> running, ulong runningBase, out int redirected, out int fallbacks)
    {
        var image = dumpedImage.ToArray();
        var byName = running.Where(s => s.IsFunction).GroupBy(s => s.Name).ToDictionary(g => g.Key, g => g.First());
        var entries = dumped.Where(s => s.IsFunction && s.Offset < (ulong)image.Length)
            .GroupBy(s => s.Offset).OrderBy(g => g.Key).ToList();
        redirected = 0;
        fallbacks = 0;
        for (int i = 0; i < entries.Count; i++)
        {
            ulong at = entries[i].Key;
            ulong room = (i + 1 < entries.Count ? entries[i + 1].Key : (ulong)image.Length) - at;
            var target = entries[i].Select(s => byName.TryGetValue(s.Name, out var r) ? r : (VdsoSymbol?)null).FirstOrDefault(r => r != null);
            byte[] code;
            if (target is { } t)
            {
                code = Jump(dumpedBase + at, runningBase + t.Offset);
                redirected++;
            }
            else
            {
                var name = entries[i].Select(s => s.Name).FirstOrDefault(SyscallFallback.ContainsKey)
                    ?? throw new CrispException($"the dumped vDSO exports {string.Join("/", entries[i].Select(s => s.Name))}, which this kernel's vDSO lacks and crisp has no system call for");
                code = SyscallStub(SyscallFallback[name]);
                fallbacks++;
            }
            if ((ulong)code.Length > room)
                throw new CrispException($"the dumped vDSO's {entries[i].First().Name} at +0x{at:x} has only {room} bytes before the next entry point; a {code.Length}-byte jump does not fit");
            code.CopyTo(image.AsSpan((int)at));
        }
        return image;
    }

    private static byte[] Jump(ulong from, ulong to)
    {
        long rel = (long)to - (long)(from + 5);
        if (rel >= int.MinValue && rel <= int.MaxValue)
        {
            var j = new byte[5];
            j[0] = 0xE9;
            BinaryPrimitives.WriteInt32LittleEndian(j.AsSpan(1), (int)rel);
            return j;
        }
        var m = new byte[12];
        m[0] = 0x48; m[1] = 0xB8;
        BinaryPrimitives.WriteUInt64LittleEndian(m.AsSpan(2), to);
        m[10] = 0xFF; m[11] = 0xE0;
        return m;
    }

    /// <summary><c>mov eax, nr; syscall; ret</c>: the vDSO functions take the system call's arguments in its registers.</summary>
    private static byte[] SyscallStub(int nr)
    {
        var s = new byte[8];
        s[0] = 0xB8;
        BinaryPrimitives.WriteInt32LittleEndian(s.AsSpan(1), nr);
        s[5] = 0x0F; s[6] = 0x05; s[7] = 0xC3;
        return s;
    }

    /// <summary>
    /// Where to park the running kernel's [vvar]/[vdso] block of <paramref name="size"/> bytes: in
    /// the dumped layout, just above the highest mapping below the stack (where the kernel puts
    /// the vDSO itself), with a guard page on each side and the stack's room to grow left free;
    /// otherwise at the top of the highest gap that fits. Addresses in <paramref name="busy"/> are
    /// half-open ranges that must stay free (every dumped VMA, crisp's control block).
    /// </summary>
    public static ulong ChoosePark(IEnumerable<(ulong Start, ulong End)> busy, ulong size, ulong? stackStart, ulong stackRoom)
    {
        const ulong Lowest = 0x10000, Highest = 0x7fff_ffff_f000;
        var ranges = busy.Where(r => r.End > r.Start && r.Start < Highest).OrderBy(r => r.Start).ToList();
        ulong need = size + 2 * PageSize;
        var gaps = new List<(ulong Start, ulong End)>();
        ulong cursor = Lowest;
        foreach (var r in ranges)
        {
            if (r.Start > cursor) gaps.Add((cursor, r.Start));
            cursor = Math.Max(cursor, r.End);
        }
        if (cursor < Highest) gaps.Add((cursor, Highest));
        if (stackStart is { } st)
        {
            var below = gaps.LastOrDefault(g => g.End == st);
            if (below.End != 0 && below.End - below.Start >= need + stackRoom) return below.Start + PageSize;
        }
        for (int i = gaps.Count - 1; i >= 0; i--)
        {
            var g = gaps[i];
            if (stackStart is { } s && g.End == s) continue;
            if (g.End - g.Start >= need) return g.End - size - PageSize;
        }
        throw new CrispException($"no room for this kernel's vDSO ({size / 1024} KiB) in the dumped address space");
    }
}
