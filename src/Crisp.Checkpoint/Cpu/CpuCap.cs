using System.Runtime.Intrinsics.X86;
using System.Text;
using Crisp.Images.Proto;
using Crisp.Native;

namespace Crisp.Checkpoint.Cpu;

/// <summary>CRIU's --cpu-cap: which checks a restore makes of the dumped CPU against this one.</summary>
[Flags]
public enum CpuCap
{
    None = 0,
    /// <summary>FPU state: FPU, FXSR, OSXSAVE, XSAVES present; XSAVE features a subset; XSAVE area size equal.</summary>
    Fpu = 1,
    /// <summary>Strict: every feature word equal.</summary>
    Cpu = 2,
    /// <summary>Instruction sets: every instruction feature the dump's CPU had (SSE4.2, AVX2, AVX-512, …) present here.</summary>
    Ins = 4,
    All = Fpu | Cpu | Ins,
    Default = Fpu | Ins,
}
