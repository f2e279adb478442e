using System.Diagnostics;
using Crisp.Images;
using Crisp.Images.Proto;
using Crisp.Inject;
using Crisp.Native;
using Crisp.Native.ProcFs;

namespace Crisp.Checkpoint.Dump;

/// <summary>What a dump collects from each process of the frozen tree: sharing between processes, per-process state, zombies.</summary>
public static partial class Dumper
{
    private const int KCMP_VM = 1, KCMP_FILES = 2, KCMP_FS = 3, KCMP_SIGHAND = 4;

    /// <summary>
    /// Processes (not threads) of the tree that share an address space, fd table, fs info or
    /// signal handlers (clone without CLONE_THREAD but with CLONE_VM/FILES/FS/SIGHAND), found
    /// with kcmp. An fd table shared with the parent (CLONE_FILES, zdtm fdt_shared) is restored:
    /// the child gets its parent's files_id, as in CRIU's images, and is cloned with CLONE_FILES.
    /// Returns, for each such child, the process whose fd table it has (the top of its chain of
    /// parents sharing it). Any other sharing is refused: each process would get objects of its
    /// own and the restore would unshare them.
    /// </summary>
    private static Dictionary<int, int> SharedTables(SeizedTree tree)
    {
        var pids = tree.Processes.Select(p => p.Pid).ToList();
        bool Same(int a, int b, int kind) => LibC.Syscall(LibC.SYS_kcmp, a, b, kind, 0, 0) == 0;
        var owner = new Dictionary<int, int>();
        // Pstree order: a parent comes before its children.
        foreach (int pid in pids)
        {
            int ppid = Proc.Stat(pid).PPid;
            if (pids.Contains(ppid) && Same(pid, ppid, KCMP_FILES))
                owner[pid] = owner.TryGetValue(ppid, out int top) ? top : ppid;
        }
        int Top(int pid) => owner.TryGetValue(pid, out int t) ? t : pid;
        for (int i = 0; i < pids.Count; i++)
            for (int j = i + 1; j < pids.Count; j++)
            {
                foreach (var (kind, what) in new[] { (KCMP_VM, "address space (CLONE_VM)"), (KCMP_FS, "cwd/root/umask (CLONE_FS)"), (KCMP_SIGHAND, "signal handlers (CLONE_SIGHAND)") })
                    if (Same(pids[i], pids[j], kind))
                        throw new CrispException($"processes {pids[i]} and {pids[j]} share one {what}: crisp cannot restore that sharing yet");
                bool shared = Same(pids[i], pids[j], KCMP_FILES);
                if (shared != (Top(pids[i]) == Top(pids[j])))
                    throw new CrispException($"processes {pids[i]} and {pids[j]} share one fd table (CLONE_FILES) other than through a parent that has it too: crisp cannot restore that sharing yet");
            }
        return owner;
    }

    private static ProcessDump Collect(SeizedProcess proc, FileTable files, SeccompDump seccomp, SharedAnonMemory sharedAnon, NamespaceIds nsIds, TreeNamespaces ns,
        uint objectId, EarlySmaps? early, bool readUts, string? parentDir, bool trackMem, ProcessDump? fdTableOwner = null)
    {
        int pid = proc.Pid;
        var sw = Stopwatch.StartNew();
        var stat = Proc.Stat(pid);
        var status = Proc.Status(pid);

        var cores = TaskState.Collect(proc, ns.Dumped);
        seccomp.Collect(proc, cores);
        double tCores = sw.Elapsed.TotalMilliseconds;
        // Layout after the injections above: their scratch pages are gone again.
        var vmas = MemoryDump.Vmas(pid, files, early?.Take(pid), sharedAnon);
        double tVmas = sw.Elapsed.TotalMilliseconds;
        var runs = Runs(pid, ns.Dumped(pid), vmas, parentDir, trackMem, out ulong inParent);
        _parentPages += inParent;
        double tRuns = sw.Elapsed.TotalMilliseconds;

        ulong brk;
        int dumpable;
        bool thpDisabled;
        uint membarriers;
        UtsnsEntry? uts = null;
        using (var sys = proc.Inject(proc.Leader))
        {
            brk = (ulong)sys.Check("brk", LibC.SYS_brk, 0);
            dumpable = (int)sys.Check("prctl(PR_GET_DUMPABLE)", LibC.SYS_prctl, LibC.PR_GET_DUMPABLE);
            thpDisabled = sys.Check("prctl(PR_GET_THP_DISABLE)", LibC.SYS_prctl, LibC.PR_GET_THP_DISABLE) != 0;
            // The MEMBARRIER_CMD_REGISTER_* bits this mm has (Linux 6.3+); restore issues each again.
            membarriers = (uint)sys.Check("membarrier(MEMBARRIER_CMD_GET_REGISTRATIONS)", LibC.SYS_membarrier, MEMBARRIER_CMD_GET_REGISTRATIONS, 0, 0);
            if (readUts) uts = ReadUts(sys);
        }
        if (membarriers != 0) cores[pid].Tc.MembarrierRegistrationMask = membarriers;
        var mm = new MmEntry
        {
            MmStartCode = stat.StartCode, MmEndCode = stat.EndCode, MmStartData = stat.StartData, MmEndData = stat.EndData,
            MmStartStack = stat.StartStack, MmStartBrk = stat.StartBrk, MmBrk = brk,
            MmArgStart = stat.ArgStart, MmArgEnd = stat.ArgEnd, MmEnvStart = stat.EnvStart, MmEnvEnd = stat.EnvEnd,
            ExeFileId = files.RegularForPath(Proc.Exe(pid), LibC.O_RDONLY),
            Dumpable = dumpable,
            ThpDisabled = thpDisabled,
        };
        // At most CRIU's AT_VECTOR_SIZE (44) words, as CRIU itself stores them: CRIU refuses a
        // longer vector. What is cut is the tail /proc/PID/auxv shows (on 6.18 AT_RSEQ_ALIGN and
        // AT_NULL); the process's own copy on its stack, which libc reads, is untouched.
        mm.MmSavedAuxv.AddRange(Auxv.ReadWords(pid).Take(CriuAuxvWords));
        mm.Vmas.AddRange(vmas.Select(v => v.Entry));
        // Guard regions go last, as pseudo-VMAs (CRIU's VMA_AREA_GUARD).
        mm.Vmas.AddRange(GuardRegions.Collect(pid));
        mm.Aios.AddRange(vmas.Where(v => (v.Entry.Status & VmaStatus.VMA_AREA_AIORING) != 0).Select(v => AioRings.Entry(pid, v.Source)));

        int pidfd = LibC.pidfd_open(pid);
        Errno.Check(pidfd, "pidfd_open", $"{pid}");
        List<FdinfoEntry> fds;
        try { fds = fdTableOwner?.Fds ?? files.CollectFds(pid, pidfd, ns.Dumped(pid)); }
        finally { LibC.close(pidfd); }

        string umaskText = status.Fields.TryGetValue("Umask", out var u) ? u : "0022";
        var fs = new FsEntry
        {
            CwdId = files.RegularForProcLink(pid, "cwd", LibC.O_RDONLY | LibC.O_DIRECTORY),
            RootId = files.RegularForPath(Proc.Root(pid), LibC.O_RDONLY | LibC.O_DIRECTORY),
            Umask = Convert.ToUInt32(umaskText.Trim(), 8),
        };

        var ids = nsIds.For(pid);
        // A mount namespace that shows crisp's mounts is recorded as crisp's: restore keeps the tree in crisp's (TreeNamespaces.cs).
        if (!ns.OwnMnt) ids.MntNsId = nsIds.Own.MntNsId;
        ids.VmId = ids.FilesId = ids.FsId = ids.SighandId = objectId;
        if (fdTableOwner != null) ids.FilesId = fdTableOwner.Ids.FilesId;

        var (pgid, sid) = ns.GroupAndSession(pid, stat);
        var pstree = new PstreeEntry
        {
            Pid = (uint)ns.Dumped(pid),
            Ppid = ns.Contains(stat.PPid) ? (uint)ns.Dumped(stat.PPid) : 0,
            Pgid = (uint)pgid,
            Sid = (uint)sid,
        };
        pstree.Threads.AddRange(proc.Tasks.Select(t => (uint)ns.Dumped(t.Tid)));
        Log.D($"process {pid}: threads' state {tCores:F1} ms, VMAs {tVmas - tCores:F1} ms, pagemap {tRuns - tVmas:F1} ms, the rest {sw.Elapsed.TotalMilliseconds - tRuns:F1} ms");
        return new ProcessDump(proc, pstree, ids, cores, mm, vmas, runs, fs, fds) { Uts = uts };
    }

    /// <summary>uname(2) run in the process: its UTS namespace's hostname and domain name.</summary>
    private static UtsnsEntry ReadUts(RemoteSyscall sys)
    {
        const int field = 65; // struct utsname: six char[65]
        using var scratch = sys.MapScratch();
        ulong at = scratch.Reserve(6 * field);
        sys.Check("uname", SYS_uname, (long)at);
        var buf = new byte[6 * field];
        RemoteMemory.Read(sys.Task.Pid, at, buf);
        string Field(int i)
        {
            var f = buf.AsSpan(i * field, field);
            int nul = f.IndexOf((byte)0);
            return System.Text.Encoding.UTF8.GetString(nul < 0 ? f : f[..nul]);
        }
        return new UtsnsEntry { Nodename = Field(1), Domainname = Field(5) };
    }

    private const long SYS_uname = 63;

    /// <summary>
    /// An exited, unreaped child: restore recreates it as a child that exits with the same
    /// status, so its parent can still reap it (CRIU's convention: task_state TASK_DEAD, exit_code the wait status, no mm).
    /// </summary>
    private static (PstreeEntry Pstree, CoreEntry Core) Zombie(int pid, TreeNamespaces ns)
    {
        var stat = Proc.Stat(pid);
        var (pgid, sid) = ns.GroupAndSession(pid, stat);
        var pstree = new PstreeEntry
        {
            Pid = (uint)ns.Dumped(pid), Ppid = ns.Contains(stat.PPid) ? (uint)ns.Dumped(stat.PPid) : (uint)stat.PPid,
            Pgid = (uint)pgid, Sid = (uint)sid,
        };
        pstree.Threads.Add(pstree.Pid);
        var core = new CoreEntry
        {
            Mtype = CoreEntry.Types.March.X8664,
            Tc = new TaskCoreEntry
            {
                TaskState = Crisp.Images.TaskStates.Zombie, ExitCode = (uint)stat.ExitCode, Personality = 0, Flags = stat.Flags, BlkSigset = 0,
                Comm = stat.Comm,
            },
        };
        Log.I($"process {pid} is a zombie (exit status 0x{stat.ExitCode:x}): recorded as such");
        return (pstree, core);
    }
}
