using Crisp.Images.Proto;
using Crisp.Native;

namespace Crisp.Checkpoint.Cpu;

/// <summary>Conversions between the kernel's user_regs_struct and CRIU's user_x86_regs_entry.</summary>
public static class Registers
{
    public static UserX86RegsEntry ToImage(in UserRegs r) => new()
    {
        R15 = r.r15, R14 = r.r14, R13 = r.r13, R12 = r.r12, Bp = r.rbp, Bx = r.rbx, R11 = r.r11, R10 = r.r10,
        R9 = r.r9, R8 = r.r8, Ax = r.rax, Cx = r.rcx, Dx = r.rdx, Si = r.rsi, Di = r.rdi, OrigAx = r.orig_rax,
        Ip = r.rip, Cs = r.cs, Flags = r.eflags, Sp = r.rsp, Ss = r.ss, FsBase = r.fs_base, GsBase = r.gs_base,
        Ds = r.ds, Es = r.es, Fs = r.fs, Gs = r.gs, Mode = UserX86RegsMode.Native,
    };

    public static UserRegs FromImage(UserX86RegsEntry e) => new()
    {
        r15 = e.R15, r14 = e.R14, r13 = e.R13, r12 = e.R12, rbp = e.Bp, rbx = e.Bx, r11 = e.R11, r10 = e.R10,
        r9 = e.R9, r8 = e.R8, rax = e.Ax, rcx = e.Cx, rdx = e.Dx, rsi = e.Si, rdi = e.Di, orig_rax = e.OrigAx,
        rip = e.Ip, cs = e.Cs, eflags = e.Flags, rsp = e.Sp, ss = e.Ss, fs_base = e.FsBase, gs_base = e.GsBase,
        ds = e.Ds, es = e.Es, fs = e.Fs, gs = e.Gs,
    };

    /// <summary>
    /// CRIU's restart rule, applied to the registers stored at dump: a thread stopped inside a
    /// syscall that the kernel would restart re-executes it after restore (rax = nr, rip back
    /// over the 2-byte syscall instruction); a restart block cannot be carried over, so that
    /// call returns EINTR, as it would after a signal handler without SA_RESTART.
    /// </summary>
    public static UserRegs ApplyRestartFixup(UserRegs r)
    {
        if ((long)r.orig_rax < 0) return r;
        switch ((long)r.rax)
        {
            case -Errno.ERESTARTSYS:
            case -Errno.ERESTARTNOINTR:
            case -Errno.ERESTARTNOHAND:
                r.rax = r.orig_rax;
                r.rip -= 2;
                break;
            case -Errno.ERESTART_RESTARTBLOCK:
                r.rax = unchecked((ulong)-Errno.EINTR);
                break;
        }
        return r;
    }
}
