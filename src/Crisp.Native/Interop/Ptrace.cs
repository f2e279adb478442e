using System.Runtime.InteropServices;

namespace Crisp.Native;

public static unsafe partial class LibC
{
    public const int PTRACE_PEEKTEXT = 1, PTRACE_PEEKDATA = 2, PTRACE_PEEKUSER = 3, PTRACE_POKETEXT = 4,
        PTRACE_POKEDATA = 5, PTRACE_POKEUSER = 6, PTRACE_CONT = 7, PTRACE_KILL = 8, PTRACE_SINGLESTEP = 9,
        PTRACE_GETREGS = 12, PTRACE_SETREGS = 13, PTRACE_GETFPREGS = 14, PTRACE_SETFPREGS = 15,
        PTRACE_ATTACH = 16, PTRACE_DETACH = 17, PTRACE_SYSCALL = 24, PTRACE_ARCH_PRCTL = 30,
        PTRACE_SETOPTIONS = 0x4200, PTRACE_GETEVENTMSG = 0x4201, PTRACE_GETSIGINFO = 0x4202,
        PTRACE_SETSIGINFO = 0x4203, PTRACE_GETREGSET = 0x4204, PTRACE_SETREGSET = 0x4205,
        PTRACE_SEIZE = 0x4206, PTRACE_INTERRUPT = 0x4207, PTRACE_LISTEN = 0x4208,
        PTRACE_PEEKSIGINFO = 0x4209, PTRACE_GETSIGMASK = 0x420a, PTRACE_SETSIGMASK = 0x420b,
        PTRACE_SECCOMP_GET_FILTER = 0x420c, PTRACE_SECCOMP_GET_METADATA = 0x420d, PTRACE_GET_SYSCALL_INFO = 0x420e,
        PTRACE_GET_RSEQ_CONFIGURATION = 0x420f;

    public const int PTRACE_O_TRACESYSGOOD = 1, PTRACE_O_TRACEFORK = 2, PTRACE_O_TRACEVFORK = 4,
        PTRACE_O_TRACECLONE = 8, PTRACE_O_TRACEEXEC = 0x10, PTRACE_O_TRACEEXIT = 0x40,
        PTRACE_O_EXITKILL = 0x100000, PTRACE_O_SUSPEND_SECCOMP = 0x200000;

    public const int PTRACE_EVENT_FORK = 1, PTRACE_EVENT_VFORK = 2, PTRACE_EVENT_CLONE = 3,
        PTRACE_EVENT_EXEC = 4, PTRACE_EVENT_EXIT = 6, PTRACE_EVENT_STOP = 128;

    /// <summary>PTRACE_PEEKSIGINFO flag: read the shared (process-wide) queue instead of the thread's.</summary>
    public const uint PTRACE_PEEKSIGINFO_SHARED = 1;

    public const int NT_PRSTATUS = 1, NT_PRFPREG = 2, NT_X86_XSTATE = 0x202;

    public const int ARCH_SET_GS = 0x1001, ARCH_SET_FS = 0x1002, ARCH_GET_FS = 0x1003, ARCH_GET_GS = 0x1004;

    [LibraryImport(Lib, SetLastError = true)]
    public static partial long ptrace(long request, int pid, nint addr, nint data);

    [StructLayout(LayoutKind.Sequential)]
    public struct ptrace_peeksiginfo_args { public ulong off; public uint flags; public int nr; }

    [StructLayout(LayoutKind.Sequential)]
    public struct ptrace_rseq_configuration
    {
        public ulong rseq_abi_pointer;
        public uint rseq_abi_size;
        public uint signature;
        public uint flags;
        public uint pad;
    }
}
