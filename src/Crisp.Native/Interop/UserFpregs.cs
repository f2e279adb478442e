using System.Runtime.InteropServices;

namespace Crisp.Native;

/// <summary>struct user_fpregs_struct (x86_64 FXSAVE area), 512 bytes.</summary>
[StructLayout(LayoutKind.Sequential, Size = 512)]
public unsafe struct UserFpregs
{
    public ushort cwd, swd, ftw, fop;
    public ulong rip, rdp;
    public uint mxcsr, mxcr_mask;
    public fixed uint st_space[32];
    public fixed uint xmm_space[64];
    public fixed uint padding[24];
}
