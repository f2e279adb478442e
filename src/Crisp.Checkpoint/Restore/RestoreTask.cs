using Crisp.Inject;
using Crisp.Native;

namespace Crisp.Checkpoint.Restore;

/// <summary>
/// One task crisp created for a restore (a stub clone that becomes a dumped thread), held in a
/// ptrace stop. Every method here must run on the <see cref="Crisp.Inject.PtraceThread"/>: the
/// restore runs its whole sequence inside one Invoke, so these are plain ptrace calls.
///
/// Injection is Crisp.Inject's (Injector.cs): rip at <c>syscall; int3</c> in the control page,
/// the int3's SIGTRAP ends the call. Clone events of the injected clone3 (PTRACE_EVENT_FORK/CLONE)
/// are noted. Every signal stays blocked in restored tasks until the very end, so no other
/// signal-delivery-stop is expected; one that comes anyway is dropped.
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

    public UserRegs GetRegs() => PtraceCalls.GetRegs(Tid);

    public void SetRegs(UserRegs r) => PtraceCalls.SetRegs(Tid, r);

    public void SetSigMask(ulong mask) => PtraceCalls.SetSigMask(Tid, mask);

    public byte[] GetXState() => PtraceCalls.GetRegSet(Tid, LibC.NT_X86_XSTATE);

    public void SetXState(byte[] xsave) => PtraceCalls.SetRegSet(Tid, LibC.NT_X86_XSTATE, xsave);

    public void Poke(ulong addr, ulong word) => PtraceCalls.PokeWord(Tid, addr, word);

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
        _nr = nr;
        return Injection.Call(BaseRegs, code, nr, a1, a2, a3, a4, a5, a6);
    }

    private Injector? _injector;
    private long _nr;                                                    // the call running, for messages

    /// <summary>
    /// Crisp.Inject's injection loop with restore's rules: a clone event notes the new task, a
    /// stray SIGTRAP or a fault ends the restore, any other signal is dropped (all are blocked).
    /// </summary>
    private Injector Injection => _injector ??= new Injector(Tid)
    {
        OnExit = (status, what) =>
        {
            Gone = true;
            return new CrispException($"{this} {Describe(status)} during {what}");
        },
        OnSignal = sig =>
        {
            if (sig == LibC.SIGTRAP)
                throw new CrispException($"{this}: unexpected SIGTRAP at 0x{GetRegs().rip:x} during injected syscall {_nr}");
            ThrowOnFault(sig, $"injected syscall {_nr}");
        },
        OnNewTask = pid => LastNewTask = pid,
    };

    private void ThrowOnFault(int sig, string during)
    {
        if (Injector.IsFault(sig)) throw new CrispException($"{this}: signal {sig} at 0x{GetRegs().rip:x} during {during}");
    }

    /// <summary>Like <see cref="Call"/>, throwing a SyscallException named <paramref name="name"/> on -errno.</summary>
    public long Check(ulong code, string name, long nr, long a1 = 0, long a2 = 0, long a3 = 0, long a4 = 0, long a5 = 0, long a6 = 0) =>
        Errno.CheckRaw(Call(code, nr, a1, a2, a3, a4, a5, a6), name, $"in {this}");

    /// <summary>
    /// Runs one syscall from an existing <c>syscall</c> instruction at <paramref name="at"/> (no int3
    /// after it): stops at syscall entry and exit with PTRACE_SYSCALL. Used for the last call, the
    /// munmap of the control page, through a syscall instruction of the restored vDSO; and for the
    /// signals queued again (the control page's <c>syscall</c>, its int3 never reached): the int3's
    /// SIGTRAP is forced, which unblocks SIGTRAP and resets its handler, so a pending SIGTRAP
    /// would be taken and the process's handler lost.
    /// </summary>
    public long CallViaSyscallStops(ulong at, long nr, long a1 = 0, long a2 = 0, long a3 = 0, long a4 = 0) =>
        Injection.CallThroughSyscall(BaseRegs, at, nr, a1, a2, a3, a4, 0, 0, sig => ThrowOnFault(sig, $"syscall {nr} by syscall stops"), "syscall by syscall stops");

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

    public static string Describe(int s) => PtraceCalls.Describe(s);
}
