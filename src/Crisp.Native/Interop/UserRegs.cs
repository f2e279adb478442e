using System.Runtime.InteropServices;

namespace Crisp.Native;

/// <summary>struct user_regs_struct (x86_64), 27 × u64, kernel order.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct UserRegs
{
    public ulong r15, r14, r13, r12, rbp, rbx, r11, r10, r9, r8, rax, rcx, rdx, rsi, rdi, orig_rax,
        rip, cs, eflags, rsp, ss, fs_base, gs_base, ds, es, fs, gs;
}
