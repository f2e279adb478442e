using System.Runtime.InteropServices;

namespace Crisp.Native;

/// <summary>siginfo_t is 128 bytes; the fields crisp looks at sit at fixed offsets.</summary>
[StructLayout(LayoutKind.Sequential, Size = 128)]
public unsafe struct SigInfo
{
    public int si_signo, si_errno, si_code;
    private int _pad;
    public fixed byte fields[112];
}
