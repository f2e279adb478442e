using System.Text;
using Crisp.Native;
using Crisp.Native.ProcFs;

namespace Crisp.Inject;

/// <summary>
/// Runs system calls inside a stopped task.
///
/// Two cautions. Injected calls that set up a restart block (nanosleep, clock_nanosleep, poll or
/// futex with a timeout) overwrite the task's own: avoid them in a task stopped with
/// -ERESTART_RESTARTBLOCK. And injectors on two threads of one process patch the same
/// address unless given distinct ones: dispose them in reverse order.
///
/// On creation it saves the task's registers and the 8 bytes at an executable address and
/// writes <c>syscall; int3</c> (0f 05 cc) there. Each call sets rip to that address, the
/// syscall number and arguments in rax, rdi, rsi, rdx, r10, r8, r9, and orig_rax = -1: the
/// task may be stopped inside an interrupted syscall, and with orig_rax ≥ 0 the kernel's
/// restart fix-up (rip -= 2, rax = orig_rax) would fire on the way out of the stop. Then
/// PTRACE_SYSCALL to the syscall's entry and exit stops (Injector.CallThroughSyscall): the
/// int3 is never reached, only a guard. The int3's SIGTRAP would be forced, and forcing a
/// blocked signal unblocks it, resets its handler if ignored, and lets a pending SIGTRAP be
/// taken: the dumped process would change (zdtm sigtrap). A signal arriving meanwhile is held
/// on the task (given back at detach) and the task continued. Dispose puts the bytes
/// and the registers back, including orig_rax/rax, so an interrupted syscall restarts
/// exactly as it would have.
/// </summary>
public sealed class RemoteSyscall : IDisposable
{
    private static readonly byte[] Code = [0x0f, 0x05, 0xcc];
    private readonly UserRegs _saved;
    private readonly ulong _savedWord;
    private bool _disposed;

    public SeizedTask Task { get; }
    /// <summary>Where the syscall instruction was written.</summary>
    public ulong CodeAddress { get; }
    /// <summary>Number of syscalls run so far.</summary>
    public long Count { get; private set; }

    private readonly List<int> _newTasks = [];
    /// <summary>
    /// Tasks created by injected clone/fork/vfork, from PTRACE_EVENT_CLONE/FORK/VFORK (only reported
    /// when the process was seized with PTRACE_O_TRACECLONE/TRACEFORK). They start in a ptrace stop:
    /// take them with <see cref="SeizedProcess.AdoptThread"/> or <see cref="SeizedProcess.AdoptProcess"/>.
    /// </summary>
    public IReadOnlyList<int> NewTasks => _newTasks;

    /// <param name="codeAddress">An executable address with 8 bytes inside its mapping; 0 picks the
    /// start of the executable mapping holding rip, or else the first executable mapping.</param>
    private readonly Injector _injector;

    internal RemoteSyscall(SeizedTask task, ulong codeAddress)
    {
        Task = task;
        _injector = MakeInjector();
        (_saved, _savedWord, CodeAddress) = task.Thread.Invoke(() =>
        {
            var regs = PtraceCalls.GetRegs(task.Tid);
            ulong addr = codeAddress != 0 ? codeAddress : PickCodeAddress(task.Tid, regs.rip); // /proc/TID: a zombie leader has empty maps
            ulong word = PtraceCalls.PeekWord(task.Tid, addr);
            ulong patched = (word & ~0xFFFFFFUL) | 0xcc050fUL;
            PtraceCalls.PokeWord(task.Tid, addr, patched);
            return (regs, word, addr);
        });
    }

    private static ulong PickCodeAddress(int tid, ulong rip)
    {
        var maps = Proc.Maps(tid);
        var exec = maps.Where(v => (v.Prot & LibC.PROT_EXEC) != 0 && !v.IsVsyscall).ToList();
        var here = exec.FirstOrDefault(v => rip >= v.Start && rip < v.End);
        var pick = here ?? exec.FirstOrDefault() ?? throw new InvalidOperationException($"{tid}: no executable mapping to inject into");
        return pick.Start;
    }

    /// <summary>Runs one syscall; returns the raw rax (-4095..-1 is -errno).</summary>
    public long Call(long nr, long a1 = 0, long a2 = 0, long a3 = 0, long a4 = 0, long a5 = 0, long a6 = 0)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        return Task.Thread.Invoke(() =>
        {
            // Through syscall stops, the int3 after the syscall never reached: an int3's SIGTRAP is
            // forced, which unblocks SIGTRAP in a task that blocks it and resets its handler, and
            // delivers a SIGTRAP it holds pending (zdtm sigtrap) — the process must not change.
            long rax = _injector.CallThroughSyscall(_saved, CodeAddress, nr, a1, a2, a3, a4, a5, a6, _injector.OnSignal);
            Count++;
            return rax;
        });
    }

    /// <summary>
    /// Injection through the one loop (Injector.cs): a signal that arrives meanwhile is held on the
    /// task (given back at detach), new tasks are noted, an exit releases the task.
    /// </summary>
    private Injector MakeInjector() => new(Task.Tid)
    {
        OnExit = (status, what) =>
        {
            Task.Released = true;
            return new InvalidOperationException($"{Task}: {PtraceCalls.Describe(status)} during {what}");
        },
        OnSignal = sig => HoldCurrentSignal(Task.Tid, sig),
        OnNewTask = _newTasks.Add,
    };

    private unsafe void HoldCurrentSignal(int tid, int sig)
    {
        SigInfo si;
        PtraceCalls.Request(LibC.PTRACE_GETSIGINFO, tid, 0, (nint)(&si), "PTRACE_GETSIGINFO");
        Task.Hold(new HeldSignal(sig, si));
    }

    /// <summary>Runs one syscall and throws SyscallException (named <paramref name="name"/>) on -errno.</summary>
    public long Check(string name, long nr, long a1 = 0, long a2 = 0, long a3 = 0, long a4 = 0, long a5 = 0, long a6 = 0) =>
        Errno.CheckRaw(Call(nr, a1, a2, a3, a4, a5, a6), name, $"in {Task}");

    // ---- common calls ----

    public ulong Mmap(ulong addr, ulong length, int prot, int flags, int fd = -1, long offset = 0) =>
        (ulong)Check("mmap", LibC.SYS_mmap, (long)addr, (long)length, prot, flags, fd, offset);

    public void Munmap(ulong addr, ulong length) => Check("munmap", LibC.SYS_munmap, (long)addr, (long)length);

    public void Mprotect(ulong addr, ulong length, int prot) => Check("mprotect", LibC.SYS_mprotect, (long)addr, (long)length, prot);

    /// <summary>Maps an anonymous read-write area in the task for pointer arguments.</summary>
    public ScratchArea MapScratch(int size = LibC.PageSize)
    {
        ulong len = (ulong)((size + LibC.PageSize - 1) & ~(LibC.PageSize - 1));
        ulong addr = Mmap(0, len, LibC.PROT_READ | LibC.PROT_WRITE, LibC.MAP_PRIVATE | LibC.MAP_ANONYMOUS);
        return new ScratchArea(this, addr, len);
    }

    /// <summary>Puts the task's original code bytes and registers back.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        if (Task.Released) return;
        Task.Thread.Invoke(() =>
        {
            PtraceCalls.PokeWord(Task.Tid, CodeAddress, _savedWord);
            PtraceCalls.SetRegs(Task.Tid, _saved);
        });
    }
}
