using System.Runtime.Intrinsics.X86;
using System.Text;
using Crisp.Images.Proto;
using Crisp.Native;

namespace Crisp.Checkpoint.Cpu;

/// <summary>
/// The CPU a process ran on, as CRIU's cpuinfo.img records it (criu/arch/x86/cpu.c): vendor,
/// family, model, stepping, 19 feature words in CRIU's word order (raw CPUID registers; the
/// four words the Linux kernel synthesises stay 0 here), the XSAVE features the kernel enables
/// for user space and the XSAVE area sizes. A process may have chosen code paths by any of
/// these at start-up (glibc picks memcpy, strlen, … by CPUID once), so a restore onto a CPU
/// without them could fault with SIGILL later; <see cref="Compare"/> says what is missing.
/// </summary>
public static class CpuFeatures
{
    public const int Words = 19;

    // CRIU's word order (compel/arch/x86/src/lib/include/uapi/asm/cpu.h).
    private const int W_1_EDX = 0, W_8000_0001_EDX = 1, W_1_ECX = 4, W_C000_0001_EDX = 5, W_8000_0001_ECX = 6, W_7_0_EBX = 9,
        W_D_1_EAX = 10, W_7_0_ECX = 11, W_F_1_EDX = 12, W_8000_0008_EBX = 13, W_6_EAX = 14, W_8000_000A_EDX = 15,
        W_F_0_EDX = 16, W_8000_0007_EBX = 17, W_7_0_EDX = 18;

    private const long ARCH_GET_XCOMP_SUPP = 0x1021;

    /// <summary>The instruction-set features a program may pick at start-up, by word and bit (CPUID's own bit numbers).</summary>
    private static readonly (int Word, int Bit, string Name)[] Instructions =
    [
        (W_1_EDX, 0, "fpu"), (W_1_EDX, 4, "tsc"), (W_1_EDX, 8, "cx8"), (W_1_EDX, 11, "sep"), (W_1_EDX, 15, "cmov"),
        (W_1_EDX, 19, "clflush"), (W_1_EDX, 23, "mmx"), (W_1_EDX, 24, "fxsr"), (W_1_EDX, 25, "sse"), (W_1_EDX, 26, "sse2"),
        (W_8000_0001_EDX, 11, "syscall"), (W_8000_0001_EDX, 22, "mmxext"), (W_8000_0001_EDX, 27, "rdtscp"),
        (W_8000_0001_EDX, 30, "3dnowext"), (W_8000_0001_EDX, 31, "3dnow"),
        (W_1_ECX, 0, "sse3"), (W_1_ECX, 1, "pclmulqdq"), (W_1_ECX, 3, "monitor"), (W_1_ECX, 9, "ssse3"), (W_1_ECX, 12, "fma"),
        (W_1_ECX, 13, "cx16"), (W_1_ECX, 19, "sse4_1"), (W_1_ECX, 20, "sse4_2"), (W_1_ECX, 22, "movbe"), (W_1_ECX, 23, "popcnt"),
        (W_1_ECX, 25, "aes"), (W_1_ECX, 26, "xsave"), (W_1_ECX, 27, "osxsave"), (W_1_ECX, 28, "avx"), (W_1_ECX, 29, "f16c"),
        (W_1_ECX, 30, "rdrand"),
        (W_8000_0001_ECX, 5, "abm"), (W_8000_0001_ECX, 6, "sse4a"), (W_8000_0001_ECX, 7, "misalignsse"),
        (W_8000_0001_ECX, 8, "3dnowprefetch"), (W_8000_0001_ECX, 11, "xop"), (W_8000_0001_ECX, 16, "fma4"), (W_8000_0001_ECX, 21, "tbm"),
        (W_7_0_EBX, 0, "fsgsbase"), (W_7_0_EBX, 3, "bmi1"), (W_7_0_EBX, 4, "hle"), (W_7_0_EBX, 5, "avx2"), (W_7_0_EBX, 8, "bmi2"),
        (W_7_0_EBX, 9, "erms"), (W_7_0_EBX, 11, "rtm"), (W_7_0_EBX, 14, "mpx"), (W_7_0_EBX, 16, "avx512f"), (W_7_0_EBX, 17, "avx512dq"),
        (W_7_0_EBX, 18, "rdseed"), (W_7_0_EBX, 19, "adx"), (W_7_0_EBX, 23, "clflushopt"), (W_7_0_EBX, 26, "avx512pf"),
        (W_7_0_EBX, 27, "avx512er"), (W_7_0_EBX, 28, "avx512cd"), (W_7_0_EBX, 29, "sha_ni"), (W_7_0_EBX, 30, "avx512bw"),
        (W_7_0_EBX, 31, "avx512vl"),
        (W_D_1_EAX, 0, "xsaveopt"), (W_D_1_EAX, 1, "xsavec"), (W_D_1_EAX, 2, "xgetbv1"),
        (W_7_0_ECX, 1, "avx512vbmi"), (W_7_0_ECX, 6, "avx512_vbmi2"), (W_7_0_ECX, 8, "gfni"), (W_7_0_ECX, 9, "vaes"),
        (W_7_0_ECX, 10, "vpclmulqdq"), (W_7_0_ECX, 11, "avx512_vnni"), (W_7_0_ECX, 12, "avx512_bitalg"),
        (W_7_0_ECX, 14, "avx512_vpopcntdq"), (W_7_0_ECX, 22, "rdpid"),
        (W_8000_0008_EBX, 0, "clzero"),
        (W_7_0_EDX, 2, "avx512_4vnniw"), (W_7_0_EDX, 3, "avx512_4fmaps"),
    ];

    /// <summary>The FPU-state features CRIU's "fpu" check requires.</summary>
    private static readonly (int Word, int Bit, string Name)[] FpuBits =
        [(W_1_EDX, 0, "fpu"), (W_1_EDX, 24, "fxsr"), (W_1_ECX, 27, "osxsave"), (W_D_1_EAX, 3, "xsaves")];

    private static readonly string[] XfeatureNames =
    [
        "x87", "sse", "avx", "mpx_bndregs", "mpx_bndcsr", "avx512_opmask", "avx512_zmm_hi256", "avx512_hi16_zmm",
        "pt", "pkru", "pasid", "cet_user", "cet_supervisor", "hdc", "uintr", "lbr", "hwp", "amx_tilecfg", "amx_tiledata", "apx",
    ];

    /// <summary>This machine's CPU as cpuinfo.img records it.</summary>
    public static unsafe CpuinfoX86Entry Host()
    {
        var (max, vb, vc, vd) = X86Base.CpuId(0, 0);
        string vendor = Encoding.ASCII.GetString([.. BitConverter.GetBytes(vb), .. BitConverter.GetBytes(vd), .. BitConverter.GetBytes(vc)]);
        var (maxExt, _, _, _) = X86Base.CpuId(unchecked((int)0x8000_0000), 0);
        uint Leaf(uint leaf, int sub, int reg)
        {
            bool ext = leaf >= 0x8000_0000;
            if (ext ? leaf > (uint)maxExt : leaf > (uint)max) return 0;
            var r = X86Base.CpuId(unchecked((int)leaf), sub);
            return (uint)(reg switch { 0 => r.Eax, 1 => r.Ebx, 2 => r.Ecx, _ => r.Edx });
        }
        var caps = new uint[Words];
        caps[W_1_EDX] = Leaf(1, 0, 3);
        caps[W_1_ECX] = Leaf(1, 0, 2);
        caps[W_8000_0001_EDX] = Leaf(0x8000_0001, 0, 3);
        caps[W_8000_0001_ECX] = Leaf(0x8000_0001, 0, 2);
        caps[W_C000_0001_EDX] = 0; // Centaur only
        caps[W_7_0_EBX] = Leaf(7, 0, 1);
        caps[W_7_0_ECX] = Leaf(7, 0, 2);
        caps[W_7_0_EDX] = Leaf(7, 0, 3);
        caps[W_D_1_EAX] = Leaf(0xD, 1, 0);
        caps[W_F_0_EDX] = Leaf(0xF, 0, 3);
        caps[W_F_1_EDX] = Leaf(0xF, 1, 3);
        caps[W_8000_0008_EBX] = Leaf(0x8000_0008, 0, 1);
        caps[W_6_EAX] = Leaf(6, 0, 0);
        caps[W_8000_000A_EDX] = Leaf(0x8000_000A, 0, 3);
        caps[W_8000_0007_EBX] = Leaf(0x8000_0007, 0, 1);

        uint sig = Leaf(1, 0, 0);
        uint family = (sig >> 8) & 0xf, model = (sig >> 4) & 0xf;
        if (family == 0xf) family += (sig >> 20) & 0xff;
        if (family >= 6) model += ((sig >> 16) & 0xf) << 4;

        // The kernel's user XSAVE features; CPUID's when the kernel does not say.
        ulong xfeatures;
        if (LibC.syscall(LibC.SYS_arch_prctl, ARCH_GET_XCOMP_SUPP, (long)&xfeatures, 0, 0, 0, 0) != 0)
            xfeatures = Leaf(0xD, 0, 0) | ((ulong)Leaf(0xD, 0, 3) << 32);

        var modelId = new StringBuilder();
        for (uint l = 0x8000_0002; l <= 0x8000_0004; l++)
            for (int reg = 0; reg < 4; reg++)
                modelId.Append(Encoding.ASCII.GetString(BitConverter.GetBytes(Leaf(l, 0, reg))));

        var e = new CpuinfoX86Entry
        {
            VendorId = vendor switch
            {
                "GenuineIntel" => CpuinfoX86Entry.Types.Vendor.Intel,
                "AuthenticAMD" or "HygonGenuine" => CpuinfoX86Entry.Types.Vendor.Amd,
                _ => CpuinfoX86Entry.Types.Vendor.Unknown,
            },
            CpuFamily = family, Model = model, Stepping = sig & 0xf,
            CapabilityVer = 2,
            ModelId = modelId.ToString().TrimEnd('\0').Trim(),
            XfeaturesMask = xfeatures,
            XsaveSize = Leaf(0xD, 0, 1),
            XsaveSizeMax = Leaf(0xD, 0, 2),
        };
        e.Capability.AddRange(caps);
        return e;
    }

    /// <summary>The instruction features present, by name (for `crisp check`).</summary>
    public static IEnumerable<string> InstructionNames(CpuinfoX86Entry e) =>
        Instructions.Where(f => Has(e, f.Word, f.Bit)).Select(f => f.Name);

    /// <summary>Sets or clears an instruction feature by name (what a dump on another CPU would record); false when crisp does not know the name.</summary>
    public static bool SetInstruction(CpuinfoX86Entry e, string name, bool on)
    {
        var f = Instructions.FirstOrDefault(x => x.Name == name);
        if (f.Name == null || f.Word >= e.Capability.Count) return false;
        e.Capability[f.Word] = on ? e.Capability[f.Word] | (1u << f.Bit) : e.Capability[f.Word] & ~(1u << f.Bit);
        return true;
    }

    /// <summary>Every instruction feature crisp checks, by name.</summary>
    public static IEnumerable<string> AllInstructionNames => Instructions.Select(f => f.Name);

    public static IEnumerable<string> XfeatureList(ulong mask) =>
        Enumerable.Range(0, 64).Where(i => (mask & (1UL << i)) != 0).Select(i => i < XfeatureNames.Length ? XfeatureNames[i] : $"xfeature{i}");

    private static bool Has(CpuinfoX86Entry e, int word, int bit) =>
        word < e.Capability.Count && (e.Capability[word] & (1u << bit)) != 0;

    /// <summary>
    /// What the dumped CPU had that this one lacks, under the checks <paramref name="caps"/> asks
    /// for (CRIU's --cpu-cap semantics); empty when the restore may go on. Features this CPU has
    /// beyond the dumped one never matter but in the strict check.
    /// </summary>
    public static List<string> Compare(CpuinfoX86Entry dumped, CpuinfoX86Entry host, CpuCap caps)
    {
        var problems = new List<string>();
        if (dumped.CapabilityVer != 2 || dumped.Capability.Count != Words)
        {
            problems.Add($"the dumped CPU record has {dumped.Capability.Count} feature words of version {dumped.CapabilityVer}; crisp reads {Words} of version 2");
            return problems;
        }
        if ((caps & CpuCap.Fpu) != 0)
        {
            var missing = FpuBits.Where(f => Has(dumped, f.Word, f.Bit) && !Has(host, f.Word, f.Bit)).Select(f => f.Name).ToList();
            if (missing.Count > 0) problems.Add($"FPU features missing here: {string.Join(", ", missing)}");
            ulong x = dumped.HasXfeaturesMask ? dumped.XfeaturesMask & ~host.XfeaturesMask : 0;
            if (x != 0) problems.Add($"XSAVE features missing here: {string.Join(", ", XfeatureList(x))}");
            if (dumped.HasXsaveSize && dumped.XsaveSize != host.XsaveSize)
                problems.Add($"XSAVE area size {dumped.XsaveSize} bytes at dump, {host.XsaveSize} here");
            if (dumped.HasXsaveSizeMax && dumped.XsaveSizeMax != host.XsaveSizeMax)
                problems.Add($"XSAVE maximum area size {dumped.XsaveSizeMax} bytes at dump, {host.XsaveSizeMax} here");
        }
        if ((caps & CpuCap.Ins) != 0)
        {
            var missing = Instructions.Where(f => Has(dumped, f.Word, f.Bit) && !Has(host, f.Word, f.Bit)).Select(f => f.Name).ToList();
            if (missing.Count > 0) problems.Add($"instruction sets missing here: {string.Join(", ", missing)}");
        }
        if ((caps & CpuCap.Cpu) != 0)
        {
            var diff = new List<string>();
            for (int w = 0; w < Words; w++)
            {
                uint d = dumped.Capability[w] ^ host.Capability[w];
                for (int b = 0; b < 32; b++)
                    if ((d & (1u << b)) != 0)
                        diff.Add(Instructions.FirstOrDefault(f => f.Word == w && f.Bit == b).Name ?? $"word {w} bit {b}");
            }
            if (diff.Count > 0) problems.Add($"CPU features differ (strict check): {string.Join(", ", diff)}");
        }
        return problems;
    }

    /// <summary>CRIU's --cpu-cap syntax: a comma-separated list of fpu, cpu, ins, all, none, each inverted by a leading ^; empty means all.</summary>
    public static CpuCap Parse(string? spec)
    {
        if (string.IsNullOrEmpty(spec)) return CpuCap.All;
        var caps = CpuCap.None;
        foreach (var raw in spec.Split(','))
        {
            bool inverse = raw.StartsWith('^');
            string name = inverse ? raw[1..] : raw;
            CpuCap c = name switch
            {
                "fpu" => CpuCap.Fpu, "cpu" => CpuCap.Cpu, "ins" => CpuCap.Ins, "all" => CpuCap.All,
                "none" => CpuCap.None,
                _ => throw new CrispException($"--cpu-cap: unknown capability '{name}' (fpu, cpu, ins, all, none)"),
            };
            if (name == "none") caps = inverse ? CpuCap.All : CpuCap.None;
            else caps = inverse ? caps & ~c : caps | c;
        }
        return caps;
    }
}
