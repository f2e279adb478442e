using System.Diagnostics;
using Crisp.Images;
using Crisp.Native;

namespace Crisp.Checkpoint.Restore;

/// <summary>
/// The restore as an ordered list of named steps over one <see cref="RestoreContext"/>
/// (what each step does: Restorer.cs's summary and the step's own file). This is the only
/// place the order is written.
///
/// The lists are iterators, pulled one step at a time by <see cref="RunSteps"/>: a condition
/// (<c>if (_c.NestedPids.Count &gt; 0)</c>) is evaluated when the runner reaches it, after
/// every earlier step ran. The runner names the step running (a failure's message says it),
/// times it and logs it. The little bookkeeping between two steps (closing fds, noting what is
/// done) runs where it stands, untimed, under the previous step's name.
///
/// On any failure every task crisp created is killed and what crisp made for the tree
/// (copies of shared files, ghost files, socket files, the network lock, the lazy-pages
/// connection) is released, and the restore thread goes back to crisp's network namespace
/// (RestoreNetns.cs); the CrispException names the step.
/// </summary>
internal sealed partial class RestoreSession
{
    private readonly record struct RestoreStep(string Name, Action Run);

    /// <summary>The whole tree, first to last.</summary>
    private IEnumerable<RestoreStep> Steps()
    {
        if (_o.Lazy) yield return new("connect to the lazy-pages daemon", ConnectLazyPages);
        yield return new("read images", LoadImages);
        yield return new("check pids", CheckPids);
        yield return new("find memory shared with parents", FindInheritedVmas);
        if (_c.NetnsImages != null) yield return new("create the network namespace", CreateNetns);
        yield return new("create sockets", CreateSockets);
        yield return new("start the stub", StartStub);
        yield return new("create the root process", CreateRoot);
        yield return new("create the process tree", CreateTree);
        yield return new("create threads", CreateThreads);
        if (_c.NestedPids.Count > 0) yield return new("set pid_for_children", EnterPidNamespacesForChildren);
        yield return new("create terminals", CreateTerminals);
        foreach (var p in _c.Procs)
            foreach (var step in ProcessSteps(p)) yield return step;
        if (_c.UnixLater != null) yield return new("send files in flight", SendFilesInFlight);
        if (_c.RepairedTcp.Count > 0) yield return new("take connections out of repair mode", FinishConnections);
        CloseSharedCopies();
        RemoveGhosts();
        yield return new("resume", ResumeAll);
        if (_c.NetLock != null) yield return new("unlock the network", UnlockNetwork);
    }

    /// <summary>One process, its threads included: its address space (unless restored already, RestoreCow.cs), then the rest of its state.</summary>
    private IEnumerable<RestoreStep> ProcessSteps(ProcessImage p)
    {
        var leader = _c.Tasks[p.Pid];
        if (!_c.AddressSpaces.ContainsKey(p.DumpedPid))
            foreach (var step in AddressSpaceSteps(p)) yield return step;
        var fileFds = _c.AddressSpaces[p.DumpedPid];
        yield return new($"process {p.Pid}: mm fields", () => SetMm(p, leader, fileFds));
        foreach (var fd in fileFds.Values) leader.Call(Code, LibC.SYS_close, fd);
        if (SharesParentFdTable(p.DumpedPid)) Log.D($"process {p.Pid}: fd table of its parent (CLONE_FILES), restored there");
        else
        {
            yield return new($"process {p.Pid}: files", () => RestoreFiles(p, leader));
            yield return new($"process {p.Pid}: file locks", () => RestoreFileLocks(p, leader));
        }
        _c.FdTablesDone.Add(p.Ids.FilesId);
        yield return new($"process {p.Pid}: fs", () => RestoreFs(p, leader));
        yield return new($"process {p.Pid}: signal handlers", () => RestoreSigactions(p, leader));
        yield return new($"process {p.Pid}: rlimits", () => RestoreRlimits(p));
        yield return new($"process {p.Pid}: task state", () => RestoreTaskState(p, leader));
        foreach (var (tid, core) in p.Threads)
            yield return new($"thread {tid}: per-thread state", () => RestoreThreadState(p, _c.Tasks[tid], core));
        yield return new($"process {p.Pid}: audit login uid", () => RestoreLoginuid(p));
        yield return new($"process {p.Pid}: seccomp", () => RestoreSeccomp(p));
        yield return new($"process {p.Pid}: credentials", () => RestoreCreds(p));
        yield return new($"process {p.Pid}: prctl state, scheduling, timers", () => RestoreLateState(p));
        // Last of the injected calls: an int3 after it would take a pending SIGTRAP (RestoreTask.CallViaSyscallStops).
        yield return new($"process {p.Pid}: pending signals", () => QueuePendingSignals(p));
    }

    /// <summary>
    /// The VMAs and their pages (RestoreMemory.cs), once per process: a parent whose children
    /// inherit some of its memory runs these before they are cloned (BeforeCloning). Leaves the
    /// fds of mapped files in <see cref="RestoreContext.AddressSpaces"/>.
    /// </summary>
    private IEnumerable<RestoreStep> AddressSpaceSteps(ProcessImage p)
    {
        var leader = _c.Tasks[p.Pid];
        var fileFds = new Dictionary<uint, int>();
        yield return new($"process {p.Pid}: clear the stub's mappings", () => ClearStub(p, leader));
        yield return new($"process {p.Pid}: move the vDSO", () => MoveVdso(p, leader));
        yield return new($"process {p.Pid}: map VMAs", () => MapVmas(p, leader, fileFds));
        if (_o.Lazy) yield return new($"process {p.Pid}: register lazy memory and hand it over", () => RegisterLazy(p, leader));
        yield return new($"process {p.Pid}: write memory", () => WritePages(p));
        foreach (var v in _c.WriteFirst)
            leader.Check(Code, "mprotect", LibC.SYS_mprotect, (long)v.Start, (long)(v.End - v.Start), v.Prot);
        _c.WriteFirst.Clear();
        if (p.Mm.Aios.Count > 0) yield return new($"process {p.Pid}: AIO rings", () => RestoreAioRings(p, leader));
        if (p.Guards.Count > 0) yield return new($"process {p.Pid}: guard regions", () => InstallGuards(p, leader));
        _c.AddressSpaces[p.DumpedPid] = fileFds;
    }

    // ---- the runner --------------------------------------------------------------------------

    public RestoredProcess Run()
    {
        var clock = Stopwatch.StartNew();
        try
        {
            RunSteps(Steps());
            LeaveNetns();
        }
        catch (Exception e)
        {
            CloseSharedCopies();
            _c.NetLock?.Release();
            RemoveGhosts();
            RemoveSocketFiles();
            if (_c.SelfPidfd >= 0) LibC.close(_c.SelfPidfd);
            _c.SelfPidfd = -1;
            KillEverything();
            LeaveNetns();
            _c.Lazy?.Dispose();
            _c.Lazy = null;
            if (e is CrispException ce && ce.Message.StartsWith("restore failed", StringComparison.Ordinal)) throw;
            throw new CrispException($"restore failed at step '{_c.CurrentStep}': {e.Message}", e);
        }
        if (_c.SelfPidfd >= 0) LibC.close(_c.SelfPidfd);
        _c.SelfPidfd = -1;
        // Pids here (crisp's namespace), as CRIU's --pidfile has them.
        if (_o.PidFile != null)
            File.WriteAllText(_o.PidFile, _c.Procs[0].Pid.ToString());
        return new RestoredProcess(_c.Procs[0].Pid, _c.Procs.Select(p => p.Pid).ToList(), clock.Elapsed) { Steps = _c.StepTimes };
    }

    private void RunSteps(IEnumerable<RestoreStep> steps)
    {
        foreach (var (name, run) in steps)
        {
            _c.CurrentStep = name;
            long t0 = Stopwatch.GetTimestamp();
            run();
            var took = Stopwatch.GetElapsedTime(t0);
            _c.StepTimes.Add((name, took));
            Log.D($"restore: {name}: {took.TotalMilliseconds:F1} ms");
        }
    }
}
