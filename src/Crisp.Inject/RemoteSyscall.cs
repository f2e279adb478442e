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
    /// Machine code that runs a table of calls, 64 bytes each (nr, six arguments, result) from r12,
    /// r13 of them, storing each rax in the record's last word, then stops at an int3:
    /// <code>
    /// loop: test r13, r13; jz done
    ///       mov rax, [r12]; mov rdi, [r12+8]; mov rsi, [r12+16]; mov rdx, [r12+24]
    ///       mov r10, [r12+32]; mov r8, [r12+40]; mov r9, [r12+48]
    ///       syscall; mov [r12+56], rax; add r12, 64; dec r13; jmp loop
    /// done: int3
    /// </code>
    /// Seven words: patched over <see cref="CodeAddress"/> for one batch and put back after it.
    /// </summary>
    private static readonly byte[] BatchCode =
    [
        0x4d, 0x85, 0xed, 0x74, 0x32, 0x49, 0x8b, 0x04, 0x24, 0x49, 0x8b, 0x7c,
        0x24, 0x08, 0x49, 0x8b, 0x74, 0x24, 0x10, 0x49, 0x8b, 0x54, 0x24, 0x18,
        0x4d, 0x8b, 0x54, 0x24, 0x20, 0x4d, 0x8b, 0x44, 0x24, 0x28, 0x4d, 0x8b,
        0x4c, 0x24, 0x30, 0x0f, 0x05, 0x49, 0x89, 0x44, 0x24, 0x38, 0x49, 0x83,
        0xc4, 0x40, 0x49, 0xff, 0xcd, 0xeb, 0xc9, 0xcc,
    ];

    private const int BatchWords = 7; // BatchCode's length in words
    private const int RecordSize = 64;
    private const ulong SigTrapBit = 1UL << (LibC.SIGTRAP - 1);
    private bool? _canTrap;

    /// <summary>
    /// Whether a forced SIGTRAP leaves this task as it was: it neither blocks nor ignores SIGTRAP
    /// (forcing would unblock it or reset the handler) nor has one pending (the forced one would
    /// merge with it and the task's own be dropped with ours).
    /// </summary>
    private bool CanTrap => _canTrap ??= Proc.TaskStatus(Task.Pid, Task.Tid) is var st
        && ((st.SigBlk | st.SigIgn | st.SigPnd | st.ShdPnd) & SigTrapBit) == 0;

    /// <summary>
    /// Runs <paramref name="calls"/> in order and returns each raw rax. Where the task lets a
    /// SIGTRAP be forced (<see cref="CanTrap"/>) they run as one batch: a table in
    /// <paramref name="scratch"/> (64 bytes a call), <see cref="BatchCode"/> patched in, one
    /// PTRACE_CONT and one stop for all of them instead of two of each per call. Otherwise one
    /// by one, through syscall stops, as <see cref="Call"/>. The calls must not block.
    /// </summary>
    public long[] CallAll(ScratchArea scratch, ReadOnlySpan<(long Nr, long A1, long A2, long A3, long A4)> calls)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var results = new long[calls.Length];
        if (calls.Length == 0) return results;
        if (!CanTrap)
        {
            var list = calls.ToArray();
            Task.Thread.Invoke(() =>
            {
                for (int i = 0; i < list.Length; i++)
                    results[i] = Call(list[i].Nr, list[i].A1, list[i].A2, list[i].A3, list[i].A4);
            });
            return results;
        }
        var table = new byte[calls.Length * RecordSize];
        for (int i = 0; i < calls.Length; i++)
        {
            var rec = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, long>(table.AsSpan(i * RecordSize, RecordSize));
            (rec[0], rec[1], rec[2], rec[3], rec[4]) = (calls[i].Nr, calls[i].A1, calls[i].A2, calls[i].A3, calls[i].A4);
        }
        ulong at = scratch.Put(table);
        int n = calls.Length;
        Task.Thread.Invoke(() =>
        {
            const int words = BatchWords;
            Span<ulong> original = stackalloc ulong[words];
            for (int w = 0; w < words; w++) original[w] = PtraceCalls.PeekWord(Task.Tid, CodeAddress + (ulong)(8 * w));
            try
            {
                for (int w = 0; w < words; w++)
                    PtraceCalls.PokeWord(Task.Tid, CodeAddress + (ulong)(8 * w), BitConverter.ToUInt64(BatchCode, 8 * w));
                var regs = _saved;
                regs.rip = CodeAddress;
                regs.orig_rax = ulong.MaxValue;
                regs.r12 = at;
                regs.r13 = (ulong)n;
                _injector.RunToTrap(regs, CodeAddress + (ulong)BatchCode.Length, $"a batch of {n} injected syscalls");
            }
            finally
            {
                if (!Task.Released)
                    for (int w = 0; w < words; w++) PtraceCalls.PokeWord(Task.Tid, CodeAddress + (ulong)(8 * w), original[w]);
            }
        });
        Count += n;
        scratch.Read(at, table);
        for (int i = 0; i < n; i++)
            results[i] = BitConverter.ToInt64(table, i * RecordSize + 56);
        return results;
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
