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
    public static int Wait(int tid) => ProcessSpawner.Wait(tid, LibC.__WALL);

    /// <summary>
    /// Waits until <paramref name="tid"/> has ended (after a SIGKILL), continuing it past the
    /// ptrace stops it reports on the way. Returns the final wait status.
    /// </summary>
    public static int Reap(int tid)
    {
        while (true)
        {
            int s = Wait(tid);
            if (!LibC.WIFSTOPPED(s)) return s;
            LibC.ptrace(LibC.PTRACE_CONT, tid, 0, 0);
        }
    }

    /// <summary>SIGKILL <paramref name="pid"/> and reap it (<see cref="Reap"/>).</summary>
    public static int KillAndReap(int pid)
    {
        LibC.kill(pid, LibC.SIGKILL);
        return Reap(pid);
    }

    /// <summary>The message of the last ptrace event stop (PTRACE_GETEVENTMSG), e.g. a new task's pid.</summary>
    public static int EventMessage(int tid)
    {
        ulong msg;
        Request(LibC.PTRACE_GETEVENTMSG, tid, 0, (nint)(&msg), "PTRACE_GETEVENTMSG");
        return (int)msg;
    }

    /// <summary>Blocked signal mask (bit n-1 = signal n).</summary>
    public static ulong GetSigMask(int tid)
    {
        ulong m;
        Request(LibC.PTRACE_GETSIGMASK, tid, 8, (nint)(&m), "PTRACE_GETSIGMASK");
        return m;
    }

    public static void SetSigMask(int tid, ulong mask) =>
        Request(LibC.PTRACE_SETSIGMASK, tid, 8, (nint)(&mask), "PTRACE_SETSIGMASK");

    /// <summary>Raw regset via PTRACE_GETREGSET; the kernel trims iov_len to the real size.</summary>
    public static byte[] GetRegSet(int tid, int type, int maxSize = 1 << 16)
    {
        var buf = new byte[maxSize];
        fixed (byte* p = buf)
        {
            var iov = new LibC.iovec((nint)p, (nuint)maxSize);
            Request(LibC.PTRACE_GETREGSET, tid, type, (nint)(&iov), RegSetName("PTRACE_GETREGSET", type));
            return buf.AsSpan(0, (int)iov.iov_len).ToArray();
        }
    }

    public static void SetRegSet(int tid, int type, byte[] data)
    {
        fixed (byte* p = data)
        {
            var iov = new LibC.iovec((nint)p, (nuint)data.Length);
            Request(LibC.PTRACE_SETREGSET, tid, type, (nint)(&iov), RegSetName("PTRACE_SETREGSET", type));
        }
    }

    private static string RegSetName(string request, int type) =>
        type == LibC.NT_X86_XSTATE ? $"{request} NT_X86_XSTATE" : $"{request} 0x{type:x}";

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
        if (r == -1 && Errno.Last != 0) throw Errno.Failure("ptrace", $"PTRACE_PEEKTEXT, {tid}, 0x{addr:x}");
        return (ulong)r;
    }

    public static void PokeWord(int tid, ulong addr, ulong word) =>
        Request(LibC.PTRACE_POKETEXT, tid, (nint)addr, (nint)word, $"PTRACE_POKETEXT 0x{addr:x}");

    private static void Marshal_SetLastError(int e) => System.Runtime.InteropServices.Marshal.SetLastPInvokeError(e);

    /// <summary>A wait status in words: "exited with status N", "stopped by signal N[, event E]", "killed by signal N".</summary>
    public static string Describe(int status)
    {
        if (LibC.WIFEXITED(status)) return $"exited with status {LibC.WEXITSTATUS(status)}";
        if (LibC.WIFSTOPPED(status))
        {
            int ev = LibC.WPTRACEEVENT(status);
            return ev != 0 ? $"stopped by signal {LibC.WSTOPSIG(status)}, event {ev}" : $"stopped by signal {LibC.WSTOPSIG(status)}";
        }
        return $"killed by signal {LibC.WTERMSIG(status)}";
    }
}
