using Crisp.Native;
using Crisp.Native.ProcFs;

namespace Crisp.Inject;

/// <summary>A process and all its descendants, frozen together (parents before children).</summary>
public sealed class SeizedTree
{
    private SeizedTree(List<SeizedProcess> processes, List<int> zombies)
    {
        Processes = processes;
        Zombies = zombies;
    }

    /// <summary>
    /// Children that had exited but were not yet reaped when the tree froze: a zombie cannot be
    /// seized (EPERM), and its parent, frozen, will not reap it. The dump records them as zombies.
    /// </summary>
    public IReadOnlyList<int> Zombies { get; }

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
            var zombies = new List<int>();
            queue.Enqueue(rootPid);
            try
            {
                while (queue.Count > 0)
                {
                    int pid = queue.Dequeue();
                    if (!seen.Add(pid)) continue;
                    SeizedProcess p;
                    try { p = SeizedProcess.Seize(thread, pid, ptraceOptions); }
                    // A zombie child has no live thread to seize (ESRCH), or refuses the seize (EPERM).
                    catch (SyscallException e) when ((e.Is(Errno.ESRCH) || e.Is(Errno.EPERM)) && pid != rootPid && IsZombie(pid)) { zombies.Add(pid); continue; }
                    catch (SyscallException e) when (e.Is(Errno.ESRCH) && pid != rootPid) { continue; } // child exited and was reaped
                    done.Add(p);
                    foreach (var c in Proc.Children(pid)) queue.Enqueue(c);
                }
            }
            catch
            {
                foreach (var p in done) { try { p.Resume(); } catch (SyscallException) { } }
                throw;
            }
            return new SeizedTree(done, zombies);
        });

    private static bool IsZombie(int pid)
    {
        try { return Proc.Stat(pid).State == 'Z'; }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return false; }
    }

    /// <summary>Detaches everything, children first.</summary>
    public void Resume()
    {
        for (int i = Processes.Count - 1; i >= 0; i--) Processes[i].Resume();
    }

    public void Kill()
    {
        for (int i = Processes.Count - 1; i >= 0; i--) Processes[i].Kill();
    }

    /// <summary>
    /// SIGKILL every process without waiting for the kernel to tear them down (for a large
    /// address space that takes longer than the dump's writing). For a caller about to exit:
    /// when the tracer goes, the kernel detaches the dying tasks and their parents reap them.
    /// </summary>
    public void KillWithoutWaiting()
    {
        foreach (var p in Processes) LibC.kill(p.Pid, LibC.SIGKILL);
    }
}
