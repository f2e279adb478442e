using System.Buffers.Binary;
using System.Diagnostics;
using Crisp.Images;
using Crisp.Images.Proto;
using Crisp.Inject;
using Crisp.Native;

namespace Crisp.Checkpoint.Restore;

/// <summary>Making the tasks: the root, each process cloned from its restored parent with its dumped pid, sessions and groups, threads.</summary>
internal sealed unsafe partial class RestoreSession
{
    /// <summary>
    /// clone3 from <paramref name="parent"/> with set_tid = the dumped <paramref name="tid"/>; returns
    /// the new task, waited into its first stop. The caller sees the new task by its pid in the
    /// caller's namespace (the dumped one); crisp traces it by its pid here, which the clone
    /// event gives (PTRACE_GETEVENTMSG reports it in the tracer's namespace). The root with
    /// CLONE_NEWPID has no set_tid: the kernel makes it pid 1 of the new namespace. A task below
    /// the root's pid namespace gets its pid at every level (RestoreNestedPids.cs).
    /// </summary>
    private RestoreTask Clone(RestoreTask parent, int hostPid, int tid, ulong flags, int exitSignal)
    {
        var args = new LibC.clone_args { flags = flags, exit_signal = (ulong)exitSignal };
        var scratch = new Scratch(this, parent.Pid);
        bool rootPidNs = (flags & CLONE_NEWPID) != 0 && parent.Pid == _c.StubPid;
        int depth = NsDepth(tid);
        if (!rootPidNs)
        {
            args.set_tid = PutSetTid(scratch, tid, out int size);
            args.set_tid_size = (ulong)size;
        }
        ulong a = scratch.PutStruct(args);
        long r = parent.Call(Code, LibC.SYS_clone3, (long)a, sizeof(LibC.clone_args));
        string pids = depth > 0 ? $"pids {string.Join("/", PidChain(tid))}" : $"pid {tid}";
        if (r == -Errno.EEXIST)
            throw new CrispException(_c.OwnPidNs || depth > 0 ? $"{pids} in use in the restored pid namespace" : $"pid {tid} is in use by another process ({Comm(tid)})");
        Errno.CheckRaw(r, "clone3", rootPidNs ? $"CLONE_NEWPID in {parent}" : $"set_tid {pids}{((flags & CLONE_NEWPID) != 0 ? " with CLONE_NEWPID" : "")} in {parent}");
        int here = _c.OwnPidNs || depth > 0 ? parent.LastNewTask : (int)r;
        if (rootPidNs ? here != r : r != PidSeenByParent(parent, tid))
            throw new CrispException($"clone3 made {r}, not the dumped {pids}");
        if (here <= 0) throw new CrispException($"clone3 of {tid} in {parent}: no clone event gave its pid here");
        var t = new RestoreTask(hostPid < 0 ? here : hostPid, here);
        _c.Created.Add(here);
        _c.Tasks[here] = t;
        _c.HostOf[tid] = here;
        _c.NsDepthHere[here] = depth;
        t.WaitFirstStop();
        return t;
    }

    private void CreateRoot()
    {
        var stub = _c.Tasks[_c.StubPid];
        var rootImg = _c.Procs[0];
        // clone3 wants exit_signal 0 with CLONE_PARENT; the child takes the stub's (SIGCHLD).
        // A tree that owned its pid namespace gets a new one, its root pid 1 there; with it a
        // mount namespace (for its /proc) and a UTS namespace when it owned those.
        ulong ns = (_c.OwnPidNs ? CLONE_NEWPID : 0) | (_c.OwnMntNs ? CLONE_NEWNS : 0) | (_c.Uts != null ? CLONE_NEWUTS : 0) | (_c.Ipc != null ? CLONE_NEWIPC : 0);
        if (_c.Timens != null) MakeTimeNamespace(stub);
        var root = Clone(stub, -1, rootImg.Pid, CLONE_PARENT | ns, 0);
        SetHostIds(rootImg, root.Pid);
        // The stub's job is done.
        PtraceCalls.KillAndReap(_c.StubPid);
        _c.Tasks.Remove(_c.StubPid);
        _c.StubPid = -1;

        root.SetSigMask(ulong.MaxValue);
        ulong ctl = (ulong)root.Check(Code, "mmap control page", LibC.SYS_mmap, (long)_c.PendingCtl, CtlSize,
            LibC.PROT_READ | LibC.PROT_WRITE | LibC.PROT_EXEC, LibC.MAP_PRIVATE | LibC.MAP_ANONYMOUS | LibC.MAP_FIXED, -1, 0);
        RemoteMemory.Write(root.Pid, ctl, [0x0f, 0x05, 0xcc]);
        _c.Ctl = ctl;
        if (_c.OwnMntNs) MountOwnProc(root);
        if (_c.Uts != null) SetUts(root, _c.Uts);
        if (_c.Ipc != null) FillIpcNamespace(root);
        if (rootImg.Sid == rootImg.DumpedPid) root.Check(Code, "setsid", LibC.SYS_setsid);
    }

    /// <summary>
    /// In the new mount namespace: mounts stop propagating to the host's (as unshare makes them),
    /// and /proc is mounted afresh, for the root's pid namespace.
    /// </summary>
    private void MountOwnProc(RestoreTask root)
    {
        var scratch = new Scratch(this, root.Pid);
        ulong slash = scratch.PutString("/"), proc = scratch.PutString("proc"), at = scratch.PutString("/proc");
        root.Check(Code, "mount(/, MS_REC|MS_PRIVATE)", SYS_mount, 0, (long)slash, 0, MS_REC | MS_PRIVATE, 0);
        root.Check(Code, "mount(proc, /proc)", SYS_mount, (long)proc, (long)at, (long)proc, MS_NOSUID | MS_NODEV | MS_NOEXEC, 0);
    }

    private void SetUts(RestoreTask root, UtsnsEntry uts)
    {
        var scratch = new Scratch(this, root.Pid);
        var host = System.Text.Encoding.UTF8.GetBytes(uts.Nodename);
        var domain = System.Text.Encoding.UTF8.GetBytes(uts.Domainname);
        root.Check(Code, $"sethostname({uts.Nodename})", SYS_sethostname, (long)scratch.Put(host), host.Length);
        root.Check(Code, $"setdomainname({uts.Domainname})", SYS_setdomainname, (long)scratch.Put(domain), domain.Length);
    }

    /// <summary>From here on the process image names the process by its pid here.</summary>
    private void SetHostIds(ProcessImage p, int hostPid)
    {
        p.Pid = hostPid;
        p.Threads[0] = (hostPid, p.Threads[0].Core);
    }

    /// <summary>
    /// Zombies are made with the living (they may lead a process group others join), and exit once
    /// every group is set up (Zombies.cs).
    /// </summary>
    private void CreateTree()
    {
        var all = _c.Procs.Select(p => (Pid: p.DumpedPid, p.Ppid, p.Pgid, p.Sid))
            .Concat(_c.Zombies.Select(z => (z.Pid, z.Ppid, z.Pgid, z.Sid))).ToList();
        // Pids below are the dumped ones (the tree's view); _c.Tasks is keyed by the pids here.
        foreach (var p in all.Skip(1))
        {
            if (!_c.HostOf.TryGetValue(p.Ppid, out int parentHere) || !_c.Tasks.TryGetValue(parentHere, out var parent) || parent.Pid != parentHere)
                throw new CrispException($"process {p.Pid}: parent {p.Ppid} is not restored before it (pstree order)");
            BeforeCloning(p.Ppid);
            ulong flags = (SharesParentFdTable(p.Pid) ? CLONE_FILES : 0) | (IsNestedInit(p.Pid) ? CLONE_NEWPID : 0);
            var t = Clone(parent, -1, p.Pid, flags, LibC.SIGCHLD);
            if (_c.Procs.FirstOrDefault(i => i.DumpedPid == p.Pid) is { } img) SetHostIds(img, t.Pid);
            if (p.Sid == p.Pid) t.Check(Code, "setsid", LibC.SYS_setsid);
        }
        // Group leaders first, then members join them. getpgid/getsid run in the task: its own view
        // (below the root's pid namespace compared from here: RestoreNestedPids.cs).
        foreach (var p in all.Where(p => p.Pgid == p.Pid && p.Sid != p.Pid))
            _c.Tasks[HostPid(p.Pid)].Check(Code, "setpgid", LibC.SYS_setpgid, 0, 0);
        var helpers = GroupHelpers(all);
        foreach (var p in all.Where(p => p.Pgid != p.Pid))
        {
            var t = _c.Tasks[HostPid(p.Pid)];
            if (NsDepth(p.Pid) > 0) { JoinGroupNested(t, p); continue; }
            int cur = (int)t.Call(Code, LibC.SYS_getpgid, 0);
            if (cur == p.Pgid) continue;
            long r = t.Call(Code, LibC.SYS_setpgid, 0, p.Pgid);
            if (r < 0) Log.W($"process {p.Pid}: cannot join process group {p.Pgid} ({Errno.Name((int)-r)}); stays in {cur}");
        }
        foreach (var p in all)
        {
            if (NsDepth(p.Pid) > 0) { CheckSessionNested(_c.Tasks[HostPid(p.Pid)], p.Pid, p.Sid); continue; }
            int sid = (int)_c.Tasks[HostPid(p.Pid)].Call(Code, LibC.SYS_getsid, 0);
            if (sid != p.Sid) Log.W($"process {p.Pid}: session {sid}, dumped in session {p.Sid} (not a session of the tree)");
        }
        foreach (var h in helpers) EndGroupHelper(h);
        foreach (var z in _c.Zombies) ExitAsZombie(z);
    }

    /// <summary>
    /// A process group whose leader is gone (zdtm zombie01: a child made a group, forked with
    /// CLONE_PARENT and exited; its child lives on in that group) cannot be joined unless it
    /// exists: as CRIU does, a helper with the leader's pid makes the group and exits once the
    /// members joined it. The helper is cloned from the root with CLONE_PARENT, so it is
    /// crisp's child (reaped by crisp) and in the root's session; a group of another session, or
    /// in a pid namespace of the tree's own (its init cannot use CLONE_PARENT), is left as before
    /// (the members stay in their parent's group, with a warning).
    /// </summary>
    private List<RestoreTask> GroupHelpers(List<(int Pid, int Ppid, int Pgid, int Sid)> all)
    {
        var helpers = new List<RestoreTask>();
        var rootSid = all[0].Sid;
        foreach (int pgid in all.Select(p => p.Pgid).Distinct())
        {
            if (all.Any(p => p.Pid == pgid) || _c.OwnPidNs || Directory.Exists($"/proc/{pgid}")) continue;
            if (all.Any(p => p.Pgid == pgid && NsDepth(p.Pid) > 0)) continue;  // its members could not see the helper
            if (all.Any(p => p.Pgid == pgid && p.Sid != rootSid)) continue;
            var helper = Clone(_c.Tasks[HostPid(all[0].Pid)], -1, pgid, CLONE_PARENT, 0);
            helper.Check(Code, $"setpgid (helper for process group {pgid})", LibC.SYS_setpgid, 0, 0);
            helpers.Add(helper);
        }
        return helpers;
    }

    private void EndGroupHelper(RestoreTask h)
    {
        PtraceCalls.KillAndReap(h.Pid);
        _c.Tasks.Remove(h.Pid);
        _c.Created.Remove(h.Pid);
        foreach (var k in _c.HostOf.Where(kv => kv.Value == h.Pid).Select(kv => kv.Key).ToList()) _c.HostOf.Remove(k);
    }

    /// <summary>
    /// Whether the process has its parent's fd table (CLONE_FILES; the images give both one
    /// files_id): it is cloned with CLONE_FILES, and the parent's files step fills the table.
    /// </summary>
    private bool SharesParentFdTable(int dumpedPid)
    {
        var img = _c.Procs.FirstOrDefault(i => i.DumpedPid == dumpedPid);
        var parent = img == null ? null : _c.Procs.FirstOrDefault(i => i.DumpedPid == img.Ppid);
        return parent != null && parent.Ids.FilesId == img!.Ids.FilesId;
    }

    /// <summary>Processes sharing an fd table must reach it through parents that have it too: only those are cloned with CLONE_FILES.</summary>
    private void CheckSharedFdTables()
    {
        foreach (var g in _c.Procs.GroupBy(p => p.Ids.FilesId).Where(g => g.Count() > 1))
        {
            var tops = g.Where(p => !SharesParentFdTable(p.DumpedPid)).Select(p => p.DumpedPid).ToList();
            if (tops.Count > 1)
                throw new CrispException($"processes {string.Join(", ", tops)} share fd table {g.Key} but not through a parent that has it: crisp cannot restore that");
        }
    }

    private void CreateThreads()
    {
        const ulong flags = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD | CLONE_SYSVSEM;
        foreach (var p in _c.Procs)
            for (int i = 1; i < p.Threads.Count; i++)
            {
                var t = Clone(_c.Tasks[p.Pid], p.Pid, p.DumpedTids[i], flags, 0);
                p.Threads[i] = (t.Tid, p.Threads[i].Core);
            }
    }
}
