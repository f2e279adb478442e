using Crisp.Native;

namespace Crisp.Inject;

/// <summary>
/// The one injection loop of crisp (CRIU's compel): runs one system call inside a thread held in
/// a ptrace stop, on the <see cref="PtraceThread"/>. Dump (<see cref="RemoteSyscall"/>, which
/// patches and puts back the code bytes of a seized task; always <see cref="CallThroughSyscall"/>,
/// so the process it dumps never takes the int3's SIGTRAP) and restore (tasks crisp made, with
/// <c>syscall; int3</c> in its control page) both go through here.
///
/// <see cref="Call"/>: rip at <c>code</c> (which holds <c>0f 05 cc</c>), rax = nr, rdi, rsi, rdx,
/// r10, r8, r9 = the arguments, orig_rax = -1 (no restart fix-up on the way out of the stop),
/// PTRACE_CONT, and the SIGTRAP of the int3 with rip = code + 3 ends the call. Other stops on
/// the way: clone/fork/vfork events give the new task's pid to <see cref="OnNewTask"/>; a
/// signal-delivery-stop goes to <see cref="OnSignal"/> (hold it, drop it or throw); other event
/// stops are passed over. <see cref="CallThroughSyscall"/>: the call runs from an existing
/// <c>syscall</c> instruction with no int3 after it, ended by the second syscall-stop
/// (PTRACE_SYSCALL; the tracee needs PTRACE_O_TRACESYSGOOD).
/// </summary>
public sealed class Injector(int tid)
{
    public int Tid { get; } = tid;
    /// <summary>The task ended (its wait status, and what ran: "injected syscall N"): the exception to throw.</summary>
    public required Func<int, string, Exception> OnExit { get; init; }
    /// <summary>A signal-delivery-stop other than the int3 that ends a call; continuing drops the signal.</summary>
    public Action<int>? OnSignal { get; init; }
    /// <summary>The pid of a task made by the injected call (PTRACE_EVENT_CLONE/FORK/VFORK).</summary>
    public Action<int>? OnNewTask { get; init; }

    /// <summary>Runs one syscall at <paramref name="code"/>; returns the raw rax (-4095..-1 is -errno).</summary>
    public long Call(in UserRegs template, ulong code, long nr, long a1 = 0, long a2 = 0, long a3 = 0, long a4 = 0, long a5 = 0, long a6 = 0) =>
        (long)RunToTrap(Registers(template, code, nr, a1, a2, a3, a4, a5, a6), code + 3, $"injected syscall {nr}").rax;

    /// <summary>
    /// Sets <paramref name="regs"/>, continues the task and returns its registers at the SIGTRAP
    /// of the int3 that ends at <paramref name="trapEnd"/> (rip just after it); that SIGTRAP is
    /// dropped, other stops are handled as in <see cref="Call"/>. The int3's SIGTRAP is forced:
    /// only for a task that neither blocks, ignores nor has pending a SIGTRAP of its own.
    /// </summary>
    public UserRegs RunToTrap(in UserRegs regs, ulong trapEnd, string what)
    {
        PtraceCalls.SetRegs(Tid, regs);
        PtraceCalls.Request(LibC.PTRACE_CONT, Tid, 0, 0, "PTRACE_CONT");
        while (true)
        {
            int status = PtraceCalls.Wait(Tid);
            if (!LibC.WIFSTOPPED(status)) throw OnExit(status, what);
            int sig = LibC.WSTOPSIG(status), ev = LibC.WPTRACEEVENT(status);
            if (ev == 0 && sig == LibC.SIGTRAP)
            {
                var after = PtraceCalls.GetRegs(Tid);
                if (after.rip == trapEnd) return after;
            }
            if (ev == 0 && IsFault(sig) && PtraceCalls.GetRegs(Tid).rip is var at && at >= regs.rip && at < trapEnd)
                throw new InvalidOperationException($"task {Tid}: signal {sig} inside the injected code at 0x{at:x} ({what})");
            if (ev == 0) OnSignal?.Invoke(sig);
            else if (ev is LibC.PTRACE_EVENT_CLONE or LibC.PTRACE_EVENT_FORK or LibC.PTRACE_EVENT_VFORK)
                OnNewTask?.Invoke(PtraceCalls.EventMessage(Tid));
            PtraceCalls.Request(LibC.PTRACE_CONT, Tid, 0, 0, "PTRACE_CONT");
        }
    }

    /// <summary>
    /// Runs one syscall from the <c>syscall</c> instruction at <paramref name="at"/> (no int3 after
    /// it), stopping at its entry and exit with PTRACE_SYSCALL; returns the raw rax. A signal stop
    /// on the way goes to <paramref name="onSignal"/> (or is dropped), a clone event to
    /// <see cref="OnNewTask"/>; a call a signal interrupted is waited through its restart.
    /// <paramref name="what"/> names the call in the exit message ("final syscall": "final syscall N").
    /// </summary>
    public long CallThroughSyscall(in UserRegs template, ulong at, long nr, long a1, long a2, long a3, long a4, long a5, long a6, Action<int>? onSignal, string what = "syscall")
    {
        PtraceCalls.SetRegs(Tid, Registers(template, at, nr, a1, a2, a3, a4, a5, a6));
        int stops = 0;
        while (true)
        {
            PtraceCalls.Request(LibC.PTRACE_SYSCALL, Tid, 0, 0, "PTRACE_SYSCALL");
            int status = PtraceCalls.Wait(Tid);
            if (!LibC.WIFSTOPPED(status)) throw OnExit(status, $"{what} {nr}");
            int sig = LibC.WSTOPSIG(status), ev = LibC.WPTRACEEVENT(status);
            if (ev is LibC.PTRACE_EVENT_CLONE or LibC.PTRACE_EVENT_FORK or LibC.PTRACE_EVENT_VFORK) { OnNewTask?.Invoke(PtraceCalls.EventMessage(Tid)); continue; }
            if (ev != 0) continue;
            if (sig == (LibC.SIGTRAP | 0x80) && ++stops == 2)
            {
                long rax = (long)PtraceCalls.GetRegs(Tid).rax;
                // Interrupted by a signal (the exit stop comes before the restart): the signal's stop
                // is next, it is held (not delivered), and the kernel restarts the call; wait for that one.
                if (rax is not (-ERESTARTSYS or -ERESTARTNOINTR or -ERESTARTNOHAND or -ERESTART_RESTARTBLOCK)) return rax;
                stops = 0;
                continue;
            }
            if (sig != (LibC.SIGTRAP | 0x80)) onSignal?.Invoke(sig);
        }
    }

    /// <summary>The kernel's restart codes, seen by a tracer at syscall exit (include/linux/errno.h).</summary>
    private const long ERESTARTSYS = 512, ERESTARTNOINTR = 513, ERESTARTNOHAND = 514, ERESTART_RESTARTBLOCK = 516;

    /// <summary>The template with rip at <paramref name="at"/>, the call in rax and its arguments, orig_rax = -1.</summary>
    private static UserRegs Registers(in UserRegs template, ulong at, long nr, long a1, long a2, long a3, long a4, long a5, long a6)
    {
        var r = template;
        r.rip = at;
        r.rax = (ulong)nr;
        r.orig_rax = ulong.MaxValue;
        r.rdi = (ulong)a1; r.rsi = (ulong)a2; r.rdx = (ulong)a3; r.r10 = (ulong)a4; r.r8 = (ulong)a5; r.r9 = (ulong)a6;
        return r;
    }

    /// <summary>A signal that means the injected code itself faulted.</summary>
    public static bool IsFault(int sig) => sig is LibC.SIGSEGV or LibC.SIGBUS or LibC.SIGILL;
}
