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
    public SeizedTask Leader => _tasks.First(t => t.Tid == Pid);

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
                if (LibC.ptrace(LibC.PTRACE_SEIZE, tid, 0, options) == -1)
                {
                    int e = Errno.Last;
                    if (e == Errno.ESRCH) continue; // thread exited between listing and seizing
                    throw new SyscallException("ptrace", e, $"PTRACE_SEIZE, {tid}");
                }
                var t = new SeizedTask(Thread, Pid, tid);
                fresh.Add(t);
                PtraceCalls.Request(LibC.PTRACE_INTERRUPT, tid, 0, 0, "PTRACE_INTERRUPT");
            }
            if (fresh.Count == 0) break;
            foreach (var t in fresh)
            {
                if (WaitForSeizeStop(t)) _tasks.Add(t);
            }
        }
        if (_tasks.Count == 0 || !_tasks.Any(t => t.Tid == Pid))
            throw new SyscallException("seize", Errno.ESRCH, $"{Pid}: leader not seized");
        _tasks.Sort((a, b) => a.Tid == Pid ? -1 : b.Tid == Pid ? 1 : a.Tid.CompareTo(b.Tid));
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
        foreach (var t in _tasks.Where(t => t.Tid != Pid).Append(Leader))
        {
            if (t.Released) continue;
            try
            {
                while (true)
                {
                    int s = PtraceCalls.Wait(t.Tid);
                    if (!LibC.WIFSTOPPED(s)) break;
                    LibC.ptrace(LibC.PTRACE_CONT, t.Tid, 0, 0);
                }
            }
            catch (SyscallException e) when (e.Is(Errno.ECHILD)) { }
            t.Released = true;
        }
    });

    public override string ToString() => $"seized {Pid} ({_tasks.Count} threads)";
}

/// <summary>A process and all its descendants, frozen together (parents before children).</summary>
public sealed class SeizedTree
{
    private SeizedTree(List<SeizedProcess> processes) => Processes = processes;

    public IReadOnlyList<SeizedProcess> Processes { get; }
    public SeizedProcess Root => Processes[0];

    /// <summary>
    /// Seizes <paramref name="rootPid"/>, then the children of each seized process
    /// (/proc/PID/task/TID/children). A fully stopped process makes no new children, so
    /// walking parent before child catches every process that exists once the walk ends.
    /// </summary>
    public static SeizedTree Seize(PtraceThread thread, int rootPid, int ptraceOptions = LibC.PTRACE_O_TRACESYSGOOD) =>
        thread.Invoke(() =>
        {
            var done = new List<SeizedProcess>();
            var seen = new HashSet<int>();
            var queue = new Queue<int>();
            queue.Enqueue(rootPid);
            try
            {
                while (queue.Count > 0)
                {
                    int pid = queue.Dequeue();
                    if (!seen.Add(pid)) continue;
                    SeizedProcess p;
                    try { p = SeizedProcess.Seize(thread, pid, ptraceOptions); }
                    catch (SyscallException e) when (e.Is(Errno.ESRCH) && pid != rootPid) { continue; } // child exited
                    done.Add(p);
                    foreach (var c in Proc.Children(pid)) queue.Enqueue(c);
                }
            }
            catch
            {
                foreach (var p in done) { try { p.Resume(); } catch (SyscallException) { } }
                throw;
            }
            return new SeizedTree(done);
        });

    /// <summary>Detaches everything, children first.</summary>
    public void Resume()
    {
        for (int i = Processes.Count - 1; i >= 0; i--) Processes[i].Resume();
    }

    public void Kill()
    {
        for (int i = Processes.Count - 1; i >= 0; i--) Processes[i].Kill();
    }
}
