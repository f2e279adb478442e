using Crisp.Inject;
using Crisp.Native;

namespace Crisp.Checkpoint.Restore;

/// <summary>
/// One task crisp created for a restore (a stub clone that becomes a dumped thread), held in a
/// ptrace stop. Every method here must run on the <see cref="Crisp.Inject.PtraceThread"/>: the
/// restore runs its whole sequence inside one Invoke, so these are plain ptrace calls.
///
/// Injection: rip is pointed at <c>syscall; int3</c> in the control page, rax/args set,
/// orig_rax = -1 (no restart fix-up on the way out of the stop), PTRACE_CONT, and the int3's
/// SIGTRAP ends the call. Clone events of the injected clone3 (PTRACE_EVENT_FORK/CLONE) are
/// noted and passed over. Every signal stays blocked in restored tasks until the very end,
/// so no other signal-delivery-stop is expected; one that comes anyway is dropped.
/// </summary>
internal sealed unsafe class RestoreTask(int pid, int tid)
{
    public int Pid { get; } = pid;
    public int Tid { get; } = tid;
    /// <summary>Registers at the task's first stop: the template for injected calls.</summary>
    public UserRegs BaseRegs;
    /// <summary>The pid/tid of the last task created by an injected clone (PTRACE_GETEVENTMSG).</summary>
    public int LastNewTask { get; private set; }
    public bool Gone { get; set; }

    public override string ToString() => Tid == Pid ? $"process {Pid}" : $"thread {Tid} of {Pid}";

    // ---- raw ptrace ----

    public static long Req(long request, int tid, nint addr, nint data, string what) =>
        PtraceCalls.Request(request, tid, addr, data, what);

    public static int Wait(int tid) => PtraceCalls.Wait(tid);

    public UserRegs GetRegs()
    {
        UserRegs r;
        Req(LibC.PTRACE_GETREGS, Tid, 0, (nint)(&r), "PTRACE_GETREGS");
        return r;
    }

    public void SetRegs(UserRegs r) => Req(LibC.PTRACE_SETREGS, Tid, 0, (nint)(&r), "PTRACE_SETREGS");

    public void SetSigMask(ulong mask) => Req(LibC.PTRACE_SETSIGMASK, Tid, 8, (nint)(&mask), "PTRACE_SETSIGMASK");

    public byte[] GetXState()
    {
        var buf = new byte[1 << 16];
        fixed (byte* p = buf)
        {
            var iov = new LibC.iovec((nint)p, (nuint)buf.Length);
            Req(LibC.PTRACE_GETREGSET, Tid, LibC.NT_X86_XSTATE, (nint)(&iov), "PTRACE_GETREGSET NT_X86_XSTATE");
            return buf.AsSpan(0, (int)iov.iov_len).ToArray();
        }
    }

    public void SetXState(byte[] xsave)
    {
        fixed (byte* p = xsave)
        {
            var iov = new LibC.iovec((nint)p, (nuint)xsave.Length);
            Req(LibC.PTRACE_SETREGSET, Tid, LibC.NT_X86_XSTATE, (nint)(&iov), "PTRACE_SETREGSET NT_X86_XSTATE");
        }
    }

    public void Poke(ulong addr, ulong word) => Req(LibC.PTRACE_POKETEXT, Tid, (nint)addr, (nint)word, $"PTRACE_POKETEXT 0x{addr:x}");

    /// <summary>Waits for the first stop of a task that was auto-attached (or seized).</summary>
    public void WaitFirstStop()
    {
        while (true)
        {
            int s = Wait(Tid);
            if (!LibC.WIFSTOPPED(s)) { Gone = true; throw new CrispException($"{this} ended before restore could start ({Describe(s)})"); }
            if (LibC.WPTRACEEVENT(s) == LibC.PTRACE_EVENT_STOP || LibC.WSTOPSIG(s) == LibC.SIGSTOP)
            {
                BaseRegs = GetRegs();
                return;
            }
            Req(LibC.PTRACE_CONT, Tid, 0, 0, "PTRACE_CONT");
        }
    }

    /// <summary>Runs one syscall at <paramref name="code"/> (which holds <c>0f 05 cc</c>); returns raw rax.</summary>
    public long Call(ulong code, long nr, long a1 = 0, long a2 = 0, long a3 = 0, long a4 = 0, long a5 = 0, long a6 = 0)
    {
        var r = BaseRegs;
        r.rip = code;
        r.rax = (ulong)nr;
        r.orig_rax = ulong.MaxValue;
        r.rdi = (ulong)a1; r.rsi = (ulong)a2; r.rdx = (ulong)a3; r.r10 = (ulong)a4; r.r8 = (ulong)a5; r.r9 = (ulong)a6;
        SetRegs(r);
        Req(LibC.PTRACE_CONT, Tid, 0, 0, "PTRACE_CONT");
        while (true)
        {
            int s = Wait(Tid);
            if (!LibC.WIFSTOPPED(s))
            {
                Gone = true;
                throw new CrispException($"{this} {Describe(s)} during injected syscall {nr}");
            }
            int sig = LibC.WSTOPSIG(s), ev = LibC.WPTRACEEVENT(s);
            if (ev is LibC.PTRACE_EVENT_FORK or LibC.PTRACE_EVENT_CLONE or LibC.PTRACE_EVENT_VFORK)
            {
                ulong msg;
                Req(LibC.PTRACE_GETEVENTMSG, Tid, 0, (nint)(&msg), "PTRACE_GETEVENTMSG");
                LastNewTask = (int)msg;
            }
            else if (ev == 0 && sig == LibC.SIGTRAP)
            {
                var after = GetRegs();
                if (after.rip == code + 3) return (long)after.rax;
                throw new CrispException($"{this}: unexpected SIGTRAP at 0x{after.rip:x} during injected syscall {nr}");
            }
            else if (ev == 0 && sig is LibC.SIGSEGV or LibC.SIGBUS or LibC.SIGILL)
            {
                var after = GetRegs();
                throw new CrispException($"{this}: signal {sig} at 0x{after.rip:x} during injected syscall {nr}");
            }
            Req(LibC.PTRACE_CONT, Tid, 0, 0, "PTRACE_CONT");
        }
    }

    /// <summary>Like <see cref="Call"/>, throwing a SyscallException named <paramref name="name"/> on -errno.</summary>
    public long Check(ulong code, string name, long nr, long a1 = 0, long a2 = 0, long a3 = 0, long a4 = 0, long a5 = 0, long a6 = 0) =>
        Errno.CheckRaw(Call(code, nr, a1, a2, a3, a4, a5, a6), name, $"in {this}");

    /// <summary>
    /// Runs one syscall from an existing <c>syscall</c> instruction at <paramref name="at"/> (no int3
    /// after it): stops at syscall entry and exit with PTRACE_SYSCALL. Used for the last call, the
    /// munmap of the control page, through a syscall instruction of the restored vDSO.
    /// </summary>
    public long CallViaSyscallStops(ulong at, long nr, long a1 = 0, long a2 = 0)
    {
        var r = BaseRegs;
        r.rip = at;
        r.rax = (ulong)nr;
        r.orig_rax = ulong.MaxValue;
        r.rdi = (ulong)a1; r.rsi = (ulong)a2;
        SetRegs(r);
        int stops = 0;
        while (true)
        {
            Req(LibC.PTRACE_SYSCALL, Tid, 0, 0, "PTRACE_SYSCALL");
            int s = Wait(Tid);
            if (!LibC.WIFSTOPPED(s)) { Gone = true; throw new CrispException($"{this} {Describe(s)} during final syscall {nr}"); }
            int sig = LibC.WSTOPSIG(s);
            if (sig == (LibC.SIGTRAP | 0x80) && ++stops == 2) return (long)GetRegs().rax;
            if (sig is LibC.SIGSEGV or LibC.SIGBUS or LibC.SIGILL)
                throw new CrispException($"{this}: signal {sig} at 0x{GetRegs().rip:x} during final syscall {nr}");
        }
    }

    /// <summary>A signal met while stepping into a syscall, handed back to the thread at detach.</summary>
    private int _detachSignal;

    public void Detach() => Req(LibC.PTRACE_DETACH, Tid, 0, _detachSignal, "PTRACE_DETACH");

    /// <summary>
    /// Runs the thread up to the entry of the syscall at its rip (PTRACE_SYSCALL), so that after the
    /// detach it is inside the call, as it was at dump time. A signal that stops it first instead
    /// is kept and delivered at the detach. False if it did not reach the entry.
    /// </summary>
    public bool StepIntoSyscall()
    {
        Req(LibC.PTRACE_SYSCALL, Tid, 0, 0, "PTRACE_SYSCALL");
        int s = Wait(Tid);
        if (!LibC.WIFSTOPPED(s)) { Gone = true; throw new CrispException($"{this} {Describe(s)} while entering its interrupted syscall"); }
        int sig = LibC.WSTOPSIG(s);
        if (sig == (LibC.SIGTRAP | 0x80)) return true;
        if (sig != LibC.SIGTRAP) _detachSignal = sig;
        return false;
    }

    public static string Describe(int s) =>
        LibC.WIFEXITED(s) ? $"exited with status {LibC.WEXITSTATUS(s)}" :
        LibC.WIFSTOPPED(s) ? $"stopped by signal {LibC.WSTOPSIG(s)}" : $"killed by signal {LibC.WTERMSIG(s)}";
}
