using Crisp.Native;

namespace Crisp.Inject;

/// <summary>Checked ptrace requests and waits; only valid on the <see cref="PtraceThread"/>.</summary>
public static unsafe class PtraceCalls
{
    public static long Request(long request, int tid, nint addr, nint data, string name)
    {
        long r = LibC.ptrace(request, tid, addr, data);
        if (r == -1)
        {
            int e = Errno.Last;
            // PEEK* return data, so -1 can be a value: they set errno to 0 first in C; we never PEEK via this path.
            throw new SyscallException("ptrace", e, $"{name}, {tid}");
        }
        return r;
    }

    /// <summary>waitpid(tid, __WALL), retrying EINTR. Returns the raw status.</summary>
    public static int Wait(int tid)
    {
        int status;
        while (true)
        {
            int r = LibC.waitpid(tid, &status, LibC.__WALL);
            if (r == -1 && Errno.Last == Errno.EINTR) continue;
            Errno.Check(r, "waitpid", tid.ToString());
            return status;
        }
    }

    public static UserRegs GetRegs(int tid)
    {
        UserRegs r;
        Request(LibC.PTRACE_GETREGS, tid, 0, (nint)(&r), "PTRACE_GETREGS");
        return r;
    }

    public static void SetRegs(int tid, in UserRegs regs)
    {
        fixed (UserRegs* p = &regs)
            Request(LibC.PTRACE_SETREGS, tid, 0, (nint)p, "PTRACE_SETREGS");
    }

    public static ulong PeekWord(int tid, ulong addr)
    {
        // PTRACE_PEEKTEXT returns the word; a -1 word is legal, so look at errno.
        Marshal_SetLastError(0);
        long r = LibC.ptrace(LibC.PTRACE_PEEKTEXT, tid, (nint)addr, 0);
        if (r == -1 && Errno.Last != 0) throw new SyscallException("ptrace", Errno.Last, $"PTRACE_PEEKTEXT, {tid}, 0x{addr:x}");
        return (ulong)r;
    }

    public static void PokeWord(int tid, ulong addr, ulong word) =>
        Request(LibC.PTRACE_POKETEXT, tid, (nint)addr, (nint)word, $"PTRACE_POKETEXT 0x{addr:x}");

    private static void Marshal_SetLastError(int e) => System.Runtime.InteropServices.Marshal.SetLastPInvokeError(e);

    public static string Describe(int status)
    {
        if (LibC.WIFEXITED(status)) return $"exited {LibC.WEXITSTATUS(status)}";
        if (LibC.WIFSTOPPED(status))
        {
            int ev = LibC.WPTRACEEVENT(status);
            return ev != 0 ? $"stopped sig {LibC.WSTOPSIG(status)} event {ev}" : $"stopped sig {LibC.WSTOPSIG(status)}";
        }
        return $"killed by signal {LibC.WTERMSIG(status)}";
    }
}
