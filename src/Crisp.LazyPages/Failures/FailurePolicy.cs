using Crisp.Native;

namespace Crisp.LazyPages;

/// <summary>
/// What happens when pages cannot be delivered: never zeros, never a hang. What a process has not
/// got is poisoned (UFFDIO_POISON: SIGBUS on access, waiters woken), or the process is killed when
/// poisoning is refused or turned off (<see cref="LazyPagesPolicy.KillOnFailure"/>). Every failure
/// is reported: it makes the daemon's exit code 1.
/// </summary>
internal sealed class FailurePolicy
{
    private const int PageSize = 4096;
    private readonly LazyPagesPolicy _policy;
    private readonly ServedProcesses _served;
    private readonly UffdEvents _events;
    private readonly LazyPagesStats _stats;
    private readonly Logger _log;
    private readonly List<string> _failures = new();

    public FailurePolicy(LazyPagesPolicy policy, ServedProcesses served, UffdEvents events, LazyPagesStats stats, Logger log)
    {
        _policy = policy;
        _served = served;
        _events = events;
        _stats = stats;
        _log = log;
    }

    /// <summary>Answers the faults still waiting on a process once it is poisoned (the fault server's).</summary>
    public Action<LazyProcess>? AnswerWaiting { get; set; }

    public IReadOnlyList<string> Failures { get { lock (_failures) return _failures.ToArray(); } }
    public int Count { get { lock (_failures) return _failures.Count; } }

    public void Fail(string message)
    {
        lock (_failures) _failures.Add(message);
        _log.I(message);   // the caller reports Failures at the end (an error there)
    }

    /// <summary>
    /// The page source can no longer deliver for this process: poison what it has not got
    /// (SIGBUS on access, waiters woken), or kill it if poisoning is refused. Caller holds Gate.
    /// </summary>
    public void FailProcess(LazyProcess p, string why)
    {
        if (p.Gone || p.Failed) return;
        p.Failed = true;
        foreach (var c in p.Claims) { foreach (var r in c.Ranges) p.Pending.Add(r); c.Clear(); }
        p.Claims.Clear();
        long poisoned = 0;
        int spins = 0;
        string? refused = _policy.KillOnFailure ? "poisoning is turned off (KillOnFailure)" : null;
        while (!p.Gone && !p.Pending.IsEmpty && refused == null)
        {
            var r = p.Pending.Ranges[0];
            p.Pending.Remove(r.Start, r.End);
            ulong cur = r.Start;
            while (cur < r.End)
            {
                var res = Uffd.Poison(p.Uffd, cur, r.End - cur);
                if (res.Status is FillStatus.Ok or FillStatus.Partial) { poisoned += res.Bytes / PageSize; cur += (ulong)res.Bytes; }
                else if (res.Status is FillStatus.Exists or FillStatus.NoVma) cur += PageSize;
                else if (res.Status == FillStatus.Again)
                {
                    p.Pending.Add(new PendingRange(cur, r.End, r.ImageAddressOf(cur)));
                    _events.AfterEagain(p, ref spins);
                    break;
                }
                else if (res.Status == FillStatus.Gone) { _served.Drop(p, "exited (ESRCH)"); break; }
                else { refused = $"UFFDIO_POISON: {Errno.Name(res.Errno)}"; break; }
            }
        }
        _stats.Poisoned(poisoned);
        if (p.Gone) { Fail($"lazy-pages: {p.Name}: {why}; the process is gone"); return; }
        if (refused == null)
        {
            Fail($"lazy-pages: {p.Name}: {why}; poisoned {poisoned} page(s) it had not got: touching them raises SIGBUS");
            AnswerWaiting?.Invoke(p);
            return;
        }
        Fail($"lazy-pages: {p.Name}: {why}; {refused}, so the process is killed");
        Kill(p.Pid, p.PidFd, p.Name, why);
        _served.Drop(p, "killed");
    }

    /// <summary>SIGKILL through the pidfd if there is one, else by pid (0: unknown, nothing is signalled).</summary>
    public void Kill(int pid, int pidfd, string name, string why)
    {
        int rc = -1;
        if (pidfd >= 0) rc = (int)LibC.Syscall(LibC.SYS_pidfd_send_signal, pidfd, LibC.SIGKILL, 0, 0);
        else if (pid > 0) rc = LibC.kill(pid, LibC.SIGKILL);
        if (rc != 0)
            Fail($"lazy-pages: {name}: could not kill it ({(pid > 0 ? Errno.Name(Errno.Last) : "pid unknown")}) after: {why}");
    }

    /// <summary>
    /// Poisons every process's remaining pages (the daemon is going away and the processes must
    /// not read zeros where they had data).
    /// </summary>
    public void PoisonEverything(string why)
    {
        foreach (var p in _served.All)
            lock (p.Gate)
                if (!p.Gone && (!p.Pending.IsEmpty || p.Claims.Count > 0)) FailProcess(p, why);
    }
}
