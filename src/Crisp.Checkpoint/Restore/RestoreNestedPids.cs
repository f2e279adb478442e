using Crisp.Images;
using Crisp.Native;

namespace Crisp.Checkpoint.Restore;

/// <summary>
/// Pid namespaces below the root's (Dump/NestedPidNamespaces.cs; crisp-nested-pids.img).
///
/// Every task is cloned with a set_tid array that fixes its pid at every level from its own
/// namespace out to the root's: set_tid[0] is its pid in its own namespace, then each namespace
/// outward, the root's last (clone3 fills set_tid from the innermost level). The init of a nested
/// namespace is cloned from its restored parent with CLONE_NEWPID and set_tid[0] = 1, so the
/// namespace is a new one, a child of its parent's, and dies with its init as the kernel has it.
/// A parent whose pid_for_children was that namespace (it had called unshare(CLONE_NEWPID)) gets
/// it again with setns(pidfd of the init, CLONE_NEWPID) once its threads exist (a thread cannot be
/// cloned while pid_for_children differs).
///
/// Process groups and sessions of a nested task are compared from crisp's side (/proc/PID/stat,
/// pids here): the numbers the images carry are the root namespace's, which a task below it does
/// not see.
/// </summary>
internal sealed unsafe partial class RestoreSession
{


    /// <summary>The task's pids from the root's namespace inward: [root's, ..., its own].</summary>
    private int[] PidChain(int dumpedTid) =>
        _c.NestedPids.TryGetValue(dumpedTid, out var n) ? [dumpedTid, .. n.NsTids] : [dumpedTid];

    /// <summary>How many pid namespaces below the root's the task is (0: in the root's).</summary>
    private int NsDepth(int dumpedTid) => _c.NestedPids.TryGetValue(dumpedTid, out var n) ? n.NsTids.Length : 0;

    /// <summary>The task's pid as it sees it itself (in its own pid namespace).</summary>
    private int OwnViewPid(int dumpedTid) => PidChain(dumpedTid)[^1];

    /// <summary>Whether the process is init of a pid namespace below the root's (cloned with CLONE_NEWPID).</summary>
    private bool IsNestedInit(int dumpedPid) => _c.NestedPids.TryGetValue(dumpedPid, out var n) && n.NsTids[^1] == 1;

    /// <summary>
    /// Reads crisp-nested-pids.img when a process is in another pid namespace than its parent, and
    /// checks the shape restore can make: a process in a namespace other than its parent's is its
    /// init, one level down; threads are at their leader's depth.
    /// </summary>
    private void ReadNestedPidNamespaces()
    {
        var byPid = _c.Procs.ToDictionary(p => p.DumpedPid);
        var nested = _c.Procs.Skip(1).Where(p => byPid.TryGetValue(p.Ppid, out var parent) && parent.Ids.PidNsId != p.Ids.PidNsId).ToList();
        if (!NestedPidsImage.Exists(_c.Dir))
        {
            if (nested.Count > 0)
                throw new ImageException(_c.Dir.PathOf(NestedPidsImage.Name),
                    $"process {nested[0].DumpedPid} is in a pid namespace below its parent's, but the images have no {NestedPidsImage.Name} with its pids there");
            return;
        }
        _c.NestedPids = NestedPidsImage.Read(_c.Dir);
        string where = _c.Dir.PathOf(NestedPidsImage.Name);
        foreach (var tid in _c.NestedPids.Keys)
            if (!_c.Procs.Any(p => p.DumpedTids.Contains(tid)) && !_c.Zombies.Any(z => z.Pid == tid))
                throw new ImageException(where, $"task {tid} is not in pstree.img");
        foreach (var p in _c.Procs)
        {
            foreach (int t in p.DumpedTids.Skip(1))
                if (NsDepth(t) != NsDepth(p.DumpedPid))
                    throw new ImageException(where, $"thread {t} of {p.DumpedPid} is at another pid namespace depth than its leader");
            if (p == _c.Procs[0])
            {
                if (NsDepth(p.DumpedPid) != 0) throw new ImageException(where, $"the root {p.DumpedPid} has pids below its own namespace");
                continue;
            }
            bool newNs = byPid.TryGetValue(p.Ppid, out var parent) && parent.Ids.PidNsId != p.Ids.PidNsId;
            CheckNestedShape(p.DumpedPid, p.Ppid, newNs, where);
        }
        foreach (var z in _c.Zombies)
            CheckNestedShape(z.Pid, z.Ppid, NsDepth(z.Pid) != NsDepth(z.Ppid), where);
        int inits = _c.Procs.Count(p => IsNestedInit(p.DumpedPid)) + _c.Zombies.Count(z => IsNestedInit(z.Pid));
        Log.I($"{inits} pid namespace(s) below the root's, {_c.NestedPids.Count} task(s) in them: each made with clone3(CLONE_NEWPID) and set_tid");
    }

    private void CheckNestedShape(int pid, int ppid, bool newNs, string where)
    {
        int mine = NsDepth(pid), theirs = NsDepth(ppid);
        if (newNs ? mine != theirs + 1 || OwnViewPid(pid) != 1 : mine != theirs)
            throw new ImageException(where, newNs
                ? $"process {pid} is in a pid namespace other than its parent {ppid}'s but not as its init one level down (pids {string.Join("/", PidChain(pid))})"
                : $"process {pid} is in its parent {ppid}'s pid namespace but at another depth");
    }

    /// <summary>set_tid for clone3: the task's pids from its own namespace outward to the root's.</summary>
    private ulong PutSetTid(Scratch scratch, int dumpedTid, out int size)
    {
        var chain = PidChain(dumpedTid);
        var bytes = new byte[chain.Length * sizeof(int)];
        for (int i = 0; i < chain.Length; i++)
            BitConverter.TryWriteBytes(bytes.AsSpan(i * sizeof(int)), chain[chain.Length - 1 - i]);
        size = chain.Length;
        return scratch.Put(bytes);
    }

    /// <summary>What clone3 returns in <paramref name="parent"/>: the new task's pid in the parent's namespace.</summary>
    private int PidSeenByParent(RestoreTask parent, int dumpedTid)
    {
        int depth = _c.NsDepthHere.GetValueOrDefault(parent.Pid);
        var chain = PidChain(dumpedTid);
        return depth < chain.Length ? chain[depth] : throw new CrispException($"task {dumpedTid} would be above its parent {parent}'s pid namespace");
    }


    /// <summary>
    /// A parent that had called unshare(CLONE_NEWPID) and forked a nested init gets its
    /// pid_for_children back: setns into the init's namespace through a pidfd opened in the parent.
    /// </summary>
    private void EnterPidNamespacesForChildren()
    {
        foreach (var n in _c.NestedPids.Values.Where(n => n.ParentForksInto))
        {
            var img = _c.Procs.FirstOrDefault(p => p.DumpedPid == n.Tid)
                      ?? throw new ImageException(_c.Dir.PathOf(NestedPidsImage.Name), $"task {n.Tid}: parent_forks_into on a task that is not a live process");
            var parent = _c.Tasks[HostPid(img.Ppid)];
            int child = PidSeenByParent(parent, n.Tid);
            int fd = (int)parent.Check(Code, $"pidfd_open({child}) (its child {n.Tid}, init of a pid namespace)", LibC.SYS_pidfd_open, child, 0);
            try { parent.Check(Code, $"setns(pidfd of {child}, CLONE_NEWPID) (pid_for_children)", LibC.SYS_setns, fd, (long)CLONE_NEWPID); }
            finally { parent.Call(Code, LibC.SYS_close, fd); }
        }
    }

    /// <summary>
    /// Process group and session of a task below the root's pid namespace, set and compared from
    /// crisp's side: setpgid in the task with the leader's pid in the task's namespace when the
    /// leader is a process of that same namespace; otherwise the task keeps its parent's group.
    /// </summary>
    private void JoinGroupNested(RestoreTask t, (int Pid, int Ppid, int Pgid, int Sid) p)
    {
        int want = HostPid(p.Pgid);
        if (Crisp.Native.ProcFs.Proc.Stat(t.Pid).Pgrp == want) return;
        var me = _c.Procs.FirstOrDefault(i => i.DumpedPid == p.Pid);
        var leader = _c.Procs.FirstOrDefault(i => i.DumpedPid == p.Pgid);
        if (me != null && leader != null && leader.Ids.PidNsId == me.Ids.PidNsId)
        {
            long r = t.Call(Code, LibC.SYS_setpgid, 0, OwnViewPid(p.Pgid));
            if (r == 0) return;
            Log.W($"process {p.Pid}: cannot join process group {p.Pgid} ({Errno.Name((int)-r)}); stays in its parent's");
            return;
        }
        Log.W($"process {p.Pid} (in a nested pid namespace): its process group {p.Pgid} has no leader in its namespace; stays in its parent's");
    }

    private void CheckSessionNested(RestoreTask t, int dumpedPid, int sid)
    {
        if (Crisp.Native.ProcFs.Proc.Stat(t.Pid).Session != HostPid(sid))
            Log.W($"process {dumpedPid}: not in session {sid} as dumped (not a session of the tree)");
    }
}
