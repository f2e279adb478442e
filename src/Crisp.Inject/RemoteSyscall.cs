using System.Text;
using Crisp.Native;
using Crisp.Native.ProcFs;

namespace Crisp.Inject;

/// <summary>
/// Runs system calls inside a stopped task.
///
/// On creation it saves the task's registers and the 8 bytes at an executable address and
/// writes <c>syscall; int3</c> (0f 05 cc) there. Each call sets rip to that address, the
/// syscall number and arguments in rax, rdi, rsi, rdx, r10, r8, r9, and orig_rax = -1: the
/// task may be stopped inside an interrupted syscall, and with orig_rax ≥ 0 the kernel's
/// restart fix-up (rip -= 2, rax = orig_rax) would fire on the way out of the stop. Then
/// PTRACE_CONT and wait for the SIGTRAP of the int3. A different signal arriving first is
/// held on the task (given back at detach) and the task continued. Dispose puts the bytes
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

    /// <param name="codeAddress">An executable address with 8 bytes inside its mapping; 0 picks the
    /// start of the executable mapping holding rip, or else the first executable mapping.</param>
    internal RemoteSyscall(SeizedTask task, ulong codeAddress)
    {
        Task = task;
        (_saved, _savedWord, CodeAddress) = task.Thread.Invoke(() =>
        {
            var regs = PtraceCalls.GetRegs(task.Tid);
            ulong addr = codeAddress != 0 ? codeAddress : PickCodeAddress(task.Pid, regs.rip);
            ulong word = PtraceCalls.PeekWord(task.Tid, addr);
            ulong patched = (word & ~0xFFFFFFUL) | 0xcc050fUL;
            PtraceCalls.PokeWord(task.Tid, addr, patched);
            return (regs, word, addr);
        });
    }

    private static ulong PickCodeAddress(int pid, ulong rip)
    {
        var maps = Proc.Maps(pid);
        var exec = maps.Where(v => (v.Prot & LibC.PROT_EXEC) != 0 && !v.IsVsyscall).ToList();
        var here = exec.FirstOrDefault(v => rip >= v.Start && rip < v.End);
        var pick = here ?? exec.FirstOrDefault() ?? throw new InvalidOperationException($"{pid}: no executable mapping to inject into");
        return pick.Start;
    }

    /// <summary>Runs one syscall; returns the raw rax (-4095..-1 is -errno).</summary>
    public long Call(long nr, long a1 = 0, long a2 = 0, long a3 = 0, long a4 = 0, long a5 = 0, long a6 = 0)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        return Task.Thread.Invoke(() =>
        {
            var r = _saved;
            r.rip = CodeAddress;
            r.rax = (ulong)nr;
            r.orig_rax = ulong.MaxValue;
            r.rdi = (ulong)a1; r.rsi = (ulong)a2; r.rdx = (ulong)a3; r.r10 = (ulong)a4; r.r8 = (ulong)a5; r.r9 = (ulong)a6;
            int tid = Task.Tid;
            PtraceCalls.SetRegs(tid, r);
            PtraceCalls.Request(LibC.PTRACE_CONT, tid, 0, 0, "PTRACE_CONT");
            while (true)
            {
                int status = PtraceCalls.Wait(tid);
                if (!LibC.WIFSTOPPED(status))
                {
                    Task.Released = true;
                    throw new InvalidOperationException($"{Task}: {PtraceCalls.Describe(status)} during injected syscall {nr}");
                }
                int sig = LibC.WSTOPSIG(status);
                int ev = LibC.WPTRACEEVENT(status);
                if (ev == 0 && sig == LibC.SIGTRAP)
                {
                    var after = PtraceCalls.GetRegs(tid);
                    if (after.rip == CodeAddress + 3)
                    {
                        Count++;
                        return (long)after.rax;
                    }
                }
                if (ev == 0)
                    HoldCurrentSignal(tid, sig);
                PtraceCalls.Request(LibC.PTRACE_CONT, tid, 0, 0, "PTRACE_CONT");
            }
        });
    }

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

/// <summary>
/// An anonymous area mapped inside the task for syscall arguments that are pointers
/// (paths, structs). Filled with process_vm_writev; a bump allocator hands out 16-byte
/// aligned slots. Dispose unmaps it (through the same injector, before that is disposed).
/// </summary>
public sealed class ScratchArea : IDisposable
{
    private readonly RemoteSyscall _sys;
    private ulong _used;
    private bool _disposed;

    internal ScratchArea(RemoteSyscall sys, ulong address, ulong length)
    {
        _sys = sys;
        Address = address;
        Length = length;
    }

    public ulong Address { get; }
    public ulong Length { get; }

    /// <summary>Copies <paramref name="data"/> into the next free slot and returns its remote address.</summary>
    public ulong Put(ReadOnlySpan<byte> data)
    {
        ulong at = Reserve(data.Length);
        RemoteMemory.Write(_sys.Task.Pid, at, data);
        return at;
    }

    /// <summary>A NUL-terminated UTF-8 string.</summary>
    public ulong PutString(string s)
    {
        var b = new byte[Encoding.UTF8.GetByteCount(s) + 1];
        Encoding.UTF8.GetBytes(s, b);
        return Put(b);
    }

    public unsafe ulong PutStruct<T>(in T value) where T : unmanaged
    {
        fixed (T* p = &value) return Put(new ReadOnlySpan<byte>(p, sizeof(T)));
    }

    /// <summary>Reserves <paramref name="size"/> bytes (for syscall outputs) and returns their address.</summary>
    public ulong Reserve(int size)
    {
        ulong at = Address + _used;
        ulong next = (_used + (ulong)size + 15) & ~15UL;
        if (next > Length) throw new InvalidOperationException($"scratch area of {Length} bytes is full");
        _used = next;
        return at;
    }

    public void Read(ulong remote, Span<byte> dest) => RemoteMemory.Read(_sys.Task.Pid, remote, dest);

    public unsafe T ReadStruct<T>(ulong remote) where T : unmanaged
    {
        T v;
        Read(remote, new Span<byte>(&v, sizeof(T)));
        return v;
    }

    /// <summary>Forgets all slots (the memory stays mapped).</summary>
    public void Reset() => _used = 0;

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _sys.Munmap(Address, Length);
    }
}
