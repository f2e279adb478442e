using Crisp.Native;

namespace Crisp.Inject;

/// <summary>
/// One seized thread, held in a ptrace stop. Every public method marshals onto the
/// <see cref="PtraceThread"/>, so callers may use it from any thread.
/// </summary>
public sealed unsafe class SeizedTask
{
    private readonly List<HeldSignal> _held = [];

    internal SeizedTask(PtraceThread thread, int pid, int tid)
    {
        Thread = thread;
        Pid = pid;
        Tid = tid;
    }

    public PtraceThread Thread { get; }
    /// <summary>Thread-group id (process pid).</summary>
    public int Pid { get; }
    public int Tid { get; }
    /// <summary>Raw wait status of the stop the task was held in after seizing.</summary>
    public int SeizeStopStatus { get; internal set; }
    /// <summary>The task was already in a group-stop (stopped by SIGSTOP/SIGTSTP...) when seized.</summary>
    public bool WasGroupStopped { get; internal set; }
    /// <summary>The signal of that group-stop (SIGSTOP, SIGTSTP, SIGTTIN or SIGTTOU); 0 when not stopped.</summary>
    public int StopSignal { get; internal set; }
    /// <summary>Registers as they were at the seize stop (before anything crisp did).</summary>
    public UserRegs SeizeRegs { get; internal set; }
    /// <summary>Signals that were being delivered while we seized; re-delivered on <see cref="Detach"/>.</summary>
    public IReadOnlyList<HeldSignal> HeldSignals => _held;
    /// <summary>Seized with PTRACE_O_SUSPEND_SECCOMP: its seccomp filter does not see injected syscalls.</summary>
    public bool SeccompSuspended { get; internal set; }
    /// <summary>The task is gone (exited while seized, or detached).</summary>
    public bool Released { get; internal set; }

    internal void Hold(HeldSignal s) => _held.Add(s);

    /// <summary>
    /// The syscall the task was inside when it stopped, if any: orig_rax ≥ 0. <see cref="InterruptedResult"/>
    /// then holds rax, e.g. -ERESTARTSYS (-512) for an interrupted blocking call.
    /// </summary>
    public long InterruptedSyscall => (long)SeizeRegs.orig_rax;
    public long InterruptedResult => (long)SeizeRegs.rax;
    /// <summary>The stop interrupted a syscall the kernel will restart on resume (rax = -ERESTART*).</summary>
    public bool SyscallWillRestart => InterruptedSyscall >= 0 &&
        InterruptedResult is -Errno.ERESTARTSYS or -Errno.ERESTARTNOINTR or -Errno.ERESTARTNOHAND or -Errno.ERESTART_RESTARTBLOCK;

    // ---- registers ----

    public UserRegs GetRegs() => Thread.Invoke(() => PtraceCalls.GetRegs(Tid));
    public void SetRegs(UserRegs regs) => Thread.Invoke(() => PtraceCalls.SetRegs(Tid, regs));

    /// <summary>The legacy FXSAVE area (PTRACE_GETFPREGS / NT_PRFPREG).</summary>
    public UserFpregs GetFpRegs() => Thread.Invoke(() =>
    {
        UserFpregs f;
        PtraceCalls.Request(LibC.PTRACE_GETFPREGS, Tid, 0, (nint)(&f), "PTRACE_GETFPREGS");
        return f;
    });

    public void SetFpRegs(UserFpregs f) => Thread.Invoke(() =>
    {
        var copy = f;
        PtraceCalls.Request(LibC.PTRACE_SETFPREGS, Tid, 0, (nint)(&copy), "PTRACE_SETFPREGS");
    });

    /// <summary>Raw regset via PTRACE_GETREGSET; the kernel trims iov_len to the real size.</summary>
    public byte[] GetRegSet(int type, int maxSize = 1 << 16) => Thread.Invoke(() => PtraceCalls.GetRegSet(Tid, type, maxSize));

    public void SetRegSet(int type, byte[] data) => Thread.Invoke(() => PtraceCalls.SetRegSet(Tid, type, data));

    /// <summary>The XSAVE area (NT_X86_XSTATE): FXSAVE legacy part, header, extended states. Size comes from the kernel.</summary>
    public byte[] GetXState() => GetRegSet(LibC.NT_X86_XSTATE);
    public void SetXState(byte[] xsave) => SetRegSet(LibC.NT_X86_XSTATE, xsave);

    // ---- signals ----

    /// <summary>Blocked signal mask (PTRACE_GETSIGMASK), bit n-1 = signal n.</summary>
    public ulong GetSigMask() => Thread.Invoke(() => PtraceCalls.GetSigMask(Tid));

    public void SetSigMask(ulong mask) => Thread.Invoke(() => PtraceCalls.SetSigMask(Tid, mask));

    /// <summary>Queued (pending) signals, per-thread or the shared process-wide queue, without dequeuing.</summary>
    public List<SigInfo> PeekPendingSignals(bool shared) => Thread.Invoke(() =>
    {
        var list = new List<SigInfo>();
        const int batch = 32;
        var buf = stackalloc SigInfo[batch];
        while (true)
        {
            var args = new LibC.ptrace_peeksiginfo_args
            {
                off = (ulong)list.Count,
                flags = shared ? LibC.PTRACE_PEEKSIGINFO_SHARED : 0,
                nr = batch,
            };
            long n = PtraceCalls.Request(LibC.PTRACE_PEEKSIGINFO, Tid, (nint)(&args), (nint)buf, "PTRACE_PEEKSIGINFO");
            for (int i = 0; i < n; i++) list.Add(buf[i]);
            if (n < batch) return list;
        }
    });

    /// <summary>The siginfo of the current signal-delivery-stop.</summary>
    public SigInfo GetSigInfo() => Thread.Invoke(() =>
    {
        SigInfo si;
        PtraceCalls.Request(LibC.PTRACE_GETSIGINFO, Tid, 0, (nint)(&si), "PTRACE_GETSIGINFO");
        return si;
    });

    /// <summary>rseq registration (PTRACE_GET_RSEQ_CONFIGURATION); rseq_abi_pointer 0 when none.</summary>
    public LibC.ptrace_rseq_configuration GetRseq() => Thread.Invoke(() =>
    {
        LibC.ptrace_rseq_configuration c = default;
        PtraceCalls.Request(LibC.PTRACE_GET_RSEQ_CONFIGURATION, Tid, sizeof(LibC.ptrace_rseq_configuration), (nint)(&c), "PTRACE_GET_RSEQ_CONFIGURATION");
        return c;
    });

    // ---- memory through this task ----

    public ulong PeekWord(ulong addr) => Thread.Invoke(() => PtraceCalls.PeekWord(Tid, addr));
    public void PokeWord(ulong addr, ulong word) => Thread.Invoke(() => PtraceCalls.PokeWord(Tid, addr, word));

    // ---- leaving ----

    /// <summary>
    /// PTRACE_DETACH, giving back signals that arrived during the seize. They are queued again
    /// before the detach (a signal passed to PTRACE_DETACH is dropped when the task sits in an
    /// event-stop, which is where a seized task usually is): rt_tgsigqueueinfo keeps the original
    /// siginfo where the kernel allows it (si_code &lt; 0 and not SI_TKILL), tgkill otherwise.
    /// </summary>
    public void Detach() => Thread.Invoke(() =>
    {
        if (Released) return;
        foreach (var h in _held) Requeue(h);
        try { PtraceCalls.Request(LibC.PTRACE_DETACH, Tid, 0, 0, "PTRACE_DETACH"); }
        catch (SyscallException e) when (e.Is(Errno.ESRCH)) { /* exited meanwhile */ }
        Released = true;
    });

    private const int SI_TKILL = -6;

    private void Requeue(HeldSignal h)
    {
        var info = h.Info;
        long r = -1;
        if (info.si_code < 0 && info.si_code != SI_TKILL)
            r = LibC.Syscall(LibC.SYS_rt_tgsigqueueinfo, Pid, Tid, h.Signo, (long)(&info));
        if (r != 0)
            Errno.Check(LibC.Syscall(LibC.SYS_tgkill, Pid, Tid, h.Signo), "tgkill", $"{Tid} sig {h.Signo}");
    }

    public override string ToString() => $"task {Tid} of {Pid}";
}
