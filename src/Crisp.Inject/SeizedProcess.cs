using Crisp.Native;
using Crisp.Native.ProcFs;

namespace Crisp.Inject;

/// <summary>
/// A process with every thread held in a ptrace stop.
///
/// Seizing: PTRACE_SEIZE each thread listed in /proc/PID/task, PTRACE_INTERRUPT it, then
/// waitpid(tid, __WALL) until it reports PTRACE_EVENT_STOP (interrupt-stop, or group-stop if
/// the process was already stopped). A thread may instead report a signal-delivery-stop: a
/// signal was being delivered as we came in. That signal is held (it would be lost if we
/// simply continued) and given back on <see cref="Resume"/>; the thread is continued without
/// it and then stops for the still-pending interrupt. Threads not yet seized can create new
/// threads, so the task list is read again until a pass finds nothing new.
/// </summary>
public sealed class SeizedProcess
{
    private readonly List<SeizedTask> _tasks = [];

    private SeizedProcess(PtraceThread thread, int pid)
    {
        Thread = thread;
        Pid = pid;
    }

    public PtraceThread Thread { get; }
    public int Pid { get; }
    /// <summary>Live seized threads, the thread-group leader first.</summary>
    public IReadOnlyList<SeizedTask> Tasks => _tasks;
    /// <summary>The thread-group leader, or the first live thread when the leader is a zombie
    /// (it called pthread_exit while other threads run on).</summary>
    public SeizedTask Leader => _tasks.FirstOrDefault(t => t.Tid == Pid) ?? _tasks[0];
    /// <summary>The leader thread has exited but the group lives on (it is not seized, and has no registers).</summary>
    public bool LeaderIsZombie { get; private set; }

    /// <summary>PTRACE_O_* options given to PTRACE_SEIZE (default TRACESYSGOOD).</summary>
    public static SeizedProcess Seize(PtraceThread thread, int pid, int ptraceOptions = LibC.PTRACE_O_TRACESYSGOOD) =>
        thread.Invoke(() =>
        {
            var p = new SeizedProcess(thread, pid);
            try { p.SeizeAll(ptraceOptions); }
            catch
            {
                foreach (var t in p._tasks) { try { t.Detach(); } catch (SyscallException) { } }
                throw;
            }
            return p;
        });

    private void SeizeAll(int options)
    {
        var known = new HashSet<int>();
        while (true)
        {
            List<int> tids;
            try { tids = Proc.Tasks(Pid); }
            catch (DirectoryNotFoundException) { throw new SyscallException("seize", Errno.ESRCH, $"{Pid}: no such process"); }
            var fresh = new List<SeizedTask>();
            foreach (var tid in tids)
            {
                if (!known.Add(tid)) continue;
                // A zombie thread (typically a leader that called pthread_exit) never reports a
                // ptrace stop: seizing and waiting for it would hang.
                if (IsZombie(tid))
                {
                    if (tid == Pid) LeaderIsZombie = true;
                    continue;
                }
                // A thread under seccomp would have crisp's injected syscalls judged by its filter
                // (strict mode kills it at the first mmap): CRIU's compel suspends seccomp for the
                // tracee, which needs CAP_SYS_ADMIN, so only where a thread has a mode set.
                bool seccomp = RunsUnderSeccomp(tid);
                if (LibC.ptrace(LibC.PTRACE_SEIZE, tid, 0, seccomp ? options | LibC.PTRACE_O_SUSPEND_SECCOMP : options) == -1)
                {
                    int e = Errno.Last;
                    if (e == Errno.ESRCH) continue; // thread exited between listing and seizing
                    throw new SyscallException("ptrace", e, $"PTRACE_SEIZE, {tid}");
                }
                var t = new SeizedTask(Thread, Pid, tid) { SeccompSuspended = seccomp };
                fresh.Add(t);
                // ESRCH here means the thread died after the seize: the wait below reports its exit.
                if (LibC.ptrace(LibC.PTRACE_INTERRUPT, tid, 0, 0) == -1 && Errno.Last != Errno.ESRCH)
                    throw Errno.Failure("ptrace", $"PTRACE_INTERRUPT, {tid}");
            }
            if (fresh.Count == 0) break;
            foreach (var t in fresh)
            {
                if (WaitForSeizeStop(t)) _tasks.Add(t);
            }
        }
        if (_tasks.Count == 0)
            throw new SyscallException("seize", Errno.ESRCH, $"{Pid}: no live thread to seize");
        _tasks.Sort((a, b) => a.Tid == Pid ? -1 : b.Tid == Pid ? 1 : a.Tid.CompareTo(b.Tid));
    }

    private bool RunsUnderSeccomp(int tid)
    {
        try { return Proc.TaskStatus(Pid, tid).Seccomp != 0; }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException) { return false; } // seize will say ESRCH
    }

    private bool IsZombie(int tid)
    {
        try { return Proc.TaskStat(Pid, tid).State is 'Z' or 'X'; }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException) { return false; } // seize will say ESRCH
    }

    /// <summary>Waits until the task sits in PTRACE_EVENT_STOP; false if it exited.</summary>
    private static unsafe bool WaitForSeizeStop(SeizedTask t)
    {
        while (true)
        {
            int status = PtraceCalls.Wait(t.Tid);
            if (!LibC.WIFSTOPPED(status)) { t.Released = true; return false; }
            int sig = LibC.WSTOPSIG(status);
            int ev = LibC.WPTRACEEVENT(status);
            if (ev == LibC.PTRACE_EVENT_STOP)
            {
                t.SeizeStopStatus = status;
                t.WasGroupStopped = sig is LibC.SIGSTOP or LibC.SIGTSTP or LibC.SIGTTIN or LibC.SIGTTOU;
                t.StopSignal = t.WasGroupStopped ? sig : 0;
                t.SeizeRegs = PtraceCalls.GetRegs(t.Tid);
                return true;
            }
            if (ev == 0)
            {
                // Signal-delivery-stop: keep the signal for later, let the interrupt take effect.
                SigInfo si;
                PtraceCalls.Request(LibC.PTRACE_GETSIGINFO, t.Tid, 0, (nint)(&si), "PTRACE_GETSIGINFO");
                t.Hold(new HeldSignal(sig, si));
            }
            PtraceCalls.Request(LibC.PTRACE_CONT, t.Tid, 0, 0, "PTRACE_CONT");
        }
    }

    /// <summary>
    /// Takes a thread that an injected clone created (auto-attached with PTRACE_O_TRACECLONE):
    /// waits for its first stop and adds it to <see cref="Tasks"/>. Its registers are the parent's
    /// at the int3 of the injection: set them before <see cref="Resume"/>.
    /// </summary>
    public SeizedTask AdoptThread(int tid) => Thread.Invoke(() =>
    {
        var t = new SeizedTask(Thread, Pid, tid);
        if (!WaitForSeizeStop(t)) throw new SyscallException("adopt", Errno.ESRCH, $"{tid}: exited before its first stop");
        _tasks.Add(t);
        return t;
    });

    /// <summary>Takes a process that an injected fork/clone created (auto-attached with PTRACE_O_TRACEFORK).</summary>
    public static SeizedProcess AdoptProcess(PtraceThread thread, int pid) => thread.Invoke(() =>
    {
        var p = new SeizedProcess(thread, pid);
        var t = new SeizedTask(thread, pid, pid);
        if (!WaitForSeizeStop(t)) throw new SyscallException("adopt", Errno.ESRCH, $"{pid}: exited before its first stop");
        p._tasks.Add(t);
        return p;
    });

    /// <summary>
    /// Runs syscalls in a task of this process (the leader by default). Dispose it before
    /// <see cref="Resume"/>: it restores the code bytes and registers it changed.
    /// </summary>
    public RemoteSyscall Inject(SeizedTask? task = null, ulong codeAddress = 0) =>
        new(task ?? Leader, codeAddress);

    /// <summary>Detaches every thread, leaving the process running as it was (held signals given back).</summary>
    public void Resume() => Thread.Invoke(() =>
    {
        foreach (var t in _tasks) t.Detach();
    });

    /// <summary>SIGKILL the process and collect the exit of every seized thread.</summary>
    public void Kill() => Thread.Invoke(() =>
    {
        LibC.kill(Pid, LibC.SIGKILL);
        // Non-leader threads first: the leader reports only once the group is empty.
        foreach (var t in _tasks.Where(t => t.Tid != Pid).Concat(_tasks.Where(t => t.Tid == Pid)))
        {
            if (t.Released) continue;
            try { PtraceCalls.Reap(t.Tid); }
            catch (SyscallException e) when (e.Is(Errno.ECHILD)) { }
            t.Released = true;
        }
        if (LeaderIsZombie)
        {
            // Never seized, so only reaped here if we happen to be its parent.
            try { PtraceCalls.Wait(Pid); }
            catch (SyscallException e) when (e.Is(Errno.ECHILD)) { }
        }
    });

    public override string ToString() => $"seized {Pid} ({_tasks.Count} threads)";
}
