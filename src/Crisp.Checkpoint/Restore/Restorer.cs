using System.Buffers.Binary;
using Crisp.Images;
using Crisp.Images.Proto;
using Crisp.Inject;
using Crisp.Native;

namespace Crisp.Checkpoint.Restore;

/// <summary>
/// Restore by morphing a stub (docs/ARCHITECTURE.md, docs/PROCESS-STATE.md). The sequence, all on one ptrace thread:
///
///  1. read the images; refuse if a dumped pid/tid is in use;
///  2. start the stub ELF (S) and seize it; patch <c>syscall; int3</c> into its text;
///  3. from S, clone3(CLONE_PARENT, set_tid = root pid) → the root R, a child of crisp;
///     S is killed. In R: block every signal, map the control page C (code + scratch) at an
///     address free in the stub's and every dumped layout;
///  4. the tree: each process is cloned from its restored parent with set_tid (so it inherits
///     the parent's session and group), setsid right after it is made when it led a session,
///     then setpgid for group leaders and group members; threads by clone3(CLONE_THREAD…, set_tid).
///     A parent whose child inherits private VMAs from it (copy-on-write, RestoreCow.cs) has its
///     address space (step 5's memory part) restored before that child is cloned, so the child
///     starts with the parent's pages; not under --lazy-pages;
///  5. morph each process: unmap what the stub (or a restored parent) had, move [vvar]/[vvar_vclock]/[vdso] to the
///     dumped addresses (through a temporary place so moves never overlap), map every VMA,
///     write the pages, madvise, PR_SET_MM_MAP; files; cwd/root/umask; sigactions; rlimits;
///     personality; per thread rseq, sigaltstack, clear_tid, robust list, comm; seccomp
///     (suspended for crisp until the detach, RestoreSeccomp.cs); creds;
///     pending signals (queued while everything is blocked);
///  6. last: munmap(C) through a <c>syscall</c> in the restored vDSO (PTRACE_SYSCALL stops),
///     set registers, XSAVE and the blocked mask, detach.
/// On any failure every task crisp created is killed, and the CrispException names the step.
/// The steps in their order: RestoreSteps.cs; the state they share: RestoreContext.cs.
/// </summary>
public static class Restorer
{
    public static RestoredProcess Restore(RestoreOptions options)
    {
        RestoredProcess r;
        var session = new RestoreSession(options);
        using (var thread = new PtraceThread("crisp-restore"))
            r = thread.Invoke(session.Run);
        // Lazy: the daemon starts its background prefetch on this word; it goes last (LazyMemory.cs).
        session.FinishLazy();
        return r;
    }
}

internal sealed unsafe partial class RestoreSession(RestoreOptions options)
{
    // x86-64 syscall numbers not in LibC.
    private const long SYS_dup3 = 292;
    private const ulong CLONE_VM = 0x100, CLONE_FS = 0x200, CLONE_FILES = 0x400, CLONE_SIGHAND = 0x800,
        CLONE_PARENT = 0x8000, CLONE_THREAD = 0x10000, CLONE_SYSVSEM = 0x40000,
        CLONE_NEWNS = 0x20000, CLONE_NEWUTS = 0x4000000, CLONE_NEWPID = 0x20000000;
    private const long SYS_mount = 165, SYS_sethostname = 170, SYS_setdomainname = 171;
    private const long MS_NOSUID = 2, MS_NODEV = 4, MS_NOEXEC = 8, MS_REC = 0x4000, MS_PRIVATE = 1 << 18;
    private const int CtlSize = 64 * 1024;
    private const int StubPtraceOptions = LibC.PTRACE_O_TRACESYSGOOD | LibC.PTRACE_O_TRACEFORK | LibC.PTRACE_O_TRACECLONE |
                                          LibC.PTRACE_O_TRACEVFORK | LibC.PTRACE_O_EXITKILL;
    private const ulong CtlBlockSize = 8 << 20;                          // control page + temporary place for vdso moves
    private const int ScratchOffset = 4096;

    private readonly RestoreOptions _o = options;
    private readonly RestoreContext _c = new();                          // all the state the steps share (RestoreContext.cs)

    private ulong Code => _c.Ctl;

    // ---- images and checks ------------------------------------------------------------

    private void LoadImages()
    {
        if (!Directory.Exists(_o.ImagesDir)) throw new CrispException($"images directory {_o.ImagesDir} does not exist");
        _c.Dir = new ImageDir(_o.ImagesDir);
        var inventory = _c.Inventory = _c.Dir.ReadInventory();
        CheckCpu();
        _c.Procs = ProcessImage.Load(_c.Dir, _c.Zombies);
        ReadNamespaces(inventory.RootIds, _c.Procs[0].Ids);
        _c.Files = _c.Dir.Exists(ImageDir.FilesName) ? _c.Dir.ReadFiles().ToDictionary(f => f.Id) : [];
        NoteFilesInFlight();
        FindSharedFiles();
        CreateGhosts();
        CheckSharedFdTables();
        foreach (var p in _c.Procs)
            foreach (var v in p.Mm.Vmas)
                if (((v.Status & VmaStatus.VMA_AREA_SOCKET) != 0 && !(_c.Files.TryGetValue((uint)v.Shmid, out var sk) && sk.Type == FdTypes.Packetsk)) ||
                    ((v.Status & VmaStatus.VMA_AREA_SYSVIPC) != 0 && _c.Ipc == null))
                    throw new CrispException($"process {p.Pid}: VMA 0x{v.Start:x}-0x{v.End:x} (status 0x{v.Status:x}) is of a kind crisp cannot restore yet");
    }

    /// <summary>Refuses a dump from a CPU with features this one lacks (as --cpu-cap asks); images without a CPU record (CRIU's usual) are not checked.</summary>
    private void CheckCpu()
    {
        if (_o.CpuCap == Cpu.CpuCap.None || !_c.Dir.Exists(ImageDir.CpuinfoName)) return;
        var dumped = _c.Dir.ReadCpuinfo().X86Entry;
        if (dumped.Count != 1) throw new ImageException(_c.Dir.PathOf(ImageDir.CpuinfoName), $"{dumped.Count} x86 CPU records, expected 1");
        var problems = Cpu.CpuFeatures.Compare(dumped[0], Cpu.CpuFeatures.Host(), _o.CpuCap);
        if (problems.Count > 0)
            throw new CrispException($"the tree was dumped on a CPU this one cannot stand in for ({string.Join("; ", problems)}); " +
                                     "--cpu-cap=none restores anyway, at the risk of SIGILL");
    }

    /// <summary>
    /// Which namespaces the tree owned: its root's ids differ from root_ids (the dumper's own).
    /// pid: the tree is restored in a new pid namespace (its pids are free there whatever
    /// runs here). mnt: a new mount namespace with a fresh /proc (the dump checked that nothing
    /// else differed). uts: its hostname and domain name. net: a new one, filled before the sockets (RestoreNetns.cs). Any other owned namespace is refused.
    /// </summary>
    private void ReadNamespaces(TaskKobjIdsEntry? rootIds, TaskKobjIdsEntry ids)
    {
        if (rootIds is null) return;
        static bool Owns(uint mine, uint root) => mine != 0 && root != 0 && mine != root;
        _c.OwnPidNs = Owns(ids.PidNsId, rootIds.PidNsId);
        _c.OwnMntNs = Owns(ids.MntNsId, rootIds.MntNsId);
        if (Owns(ids.UtsNsId, rootIds.UtsNsId))
            _c.Uts = _c.Dir.Exists(ImageDir.UtsnsName(ids.UtsNsId)) ? _c.Dir.ReadUtsns(ids.UtsNsId)
                : throw new ImageException(_c.Dir.PathOf(ImageDir.UtsnsName(ids.UtsNsId)), "the tree owned a UTS namespace but its image is missing");
        var refused = new List<string>();
        if (Owns(ids.NetNsId, rootIds.NetNsId)) ReadNetns(ids.NetNsId);
        if (Owns(ids.IpcNsId, rootIds.IpcNsId)) ReadIpcNamespace(ids.IpcNsId);
        if (Owns(ids.TimeNsId, rootIds.TimeNsId)) ReadTimeNamespace(ids.TimeNsId);
        if (Owns(ids.UserNsId, rootIds.UserNsId)) refused.Add("user");
        if (Owns(ids.CgroupNsId, rootIds.CgroupNsId)) refused.Add("cgroup");
        if (_c.OwnMntNs && !_c.OwnPidNs) refused.Add("mnt (without its own pid namespace)");
        if (refused.Count > 0)
            throw new CrispException($"the tree owned its own {string.Join(", ", refused)} namespace(s), which crisp cannot restore yet");
        if (_c.OwnPidNs && _c.Procs[0].Pid != 1)
            throw new ImageException(_c.Dir.PathOf(ImageDir.PstreeName), $"the tree owned its pid namespace but its root is pid {_c.Procs[0].Pid}, not 1");
        ReadNestedPidNamespaces();
        if (_c.OwnPidNs) Log.I($"the tree owned its pid namespace: restored in a new one{(_c.OwnMntNs ? " with its own /proc" : "")}{(_c.Uts != null ? $", hostname {_c.Uts.Nodename}" : "")}");
    }

    /// <summary>The pid here of the task the images call <paramref name="dumped"/>.</summary>
    private int HostPid(int dumped) => _c.HostOf.TryGetValue(dumped, out int h) ? h : dumped;

    private void CheckPids()
    {
        // A new pid namespace has every pid free, whatever holds the same numbers here (the frozen source).
        if (_c.OwnPidNs) return;
        foreach (var p in _c.Procs)
            foreach (var (tid, _) in p.Threads)
                if (Directory.Exists($"/proc/{tid}") && !WaitForZombieRelease(tid))
                    throw new CrispException($"pid {tid} is in use by another process ({Comm(tid)})");
        foreach (var z in _c.Zombies)
            if (Directory.Exists($"/proc/{z.Pid}") && !WaitForZombieRelease(z.Pid))
                throw new CrispException($"pid {z.Pid} is in use by another process ({Comm(z.Pid)})");
    }

    /// <summary>
    /// A dump kills the tree and returns; the killed process stays a zombie until its own parent
    /// reaps it, which usually takes microseconds. A pid held by a zombie is given a moment to
    /// be released rather than refused at once.
    /// </summary>
    private static bool WaitForZombieRelease(int pid)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        while (clock.ElapsedMilliseconds < 2000)
        {
            string state;
            try { state = File.ReadAllText($"/proc/{pid}/stat"); }
            catch (IOException) { return true; }
            int close = state.LastIndexOf(')');
            if (close < 0 || close + 2 >= state.Length || (state[close + 2] != 'Z' && state[close + 2] != 'X')) return false;
            Thread.Sleep(1);
        }
        return !Directory.Exists($"/proc/{pid}");
    }

    private static string Comm(int pid)
    {
        try { return File.ReadAllText($"/proc/{pid}/comm").Trim(); }
        catch (IOException) { return "?"; }
    }

    // ---- stub, root, tree ------------------------------------------------------------

    private void StartStub()
    {
        var all = _c.Procs.SelectMany(p => p.Mm.Vmas).Where(v => (v.Status & VmaStatus.VMA_AREA_VSYSCALL) == 0)
            .Select(v => (v.Start, v.End)).ToList();
        ulong load = StubElf.DefaultLoadAddress;
        while (Overlaps(all, load, load + 0x1000)) load += 0x10_0000_0000;

        // Fds crisp passes into the tree: --inherit-fd targets, and with -j crisp's stdio.
        int maxFd = _c.Procs.SelectMany(p => p.Fds).Select(f => (int)f.Fd).DefaultIfEmpty(2).Max();
        _c.ExtraBase = Math.Max(maxFd + 1, 3);
        if (_c.OwnPidNs || _c.NestedPids.Count > 0)
        {
            // First of the passed fds (-j's stdio must stay the last three): see PlaceShared.
            _c.SelfPidfd = Errno.Check(LibC.pidfd_open(Environment.ProcessId), "pidfd_open", "crisp itself");
            _c.ExtraCrispFds.Add(_c.SelfPidfd);
        }
        foreach (var fd in _o.InheritFds.Values.Distinct()) _c.ExtraCrispFds.Add(fd);
        if (_o.ShellJob) _c.ExtraCrispFds.AddRange([0, 1, 2]);
        var extra = _c.ExtraCrispFds.Select((fd, i) => (fd, _c.ExtraBase + i)).ToList();

        _c.StubPid = StartStubProcess(load, extra);
        RestoreTask.Req(LibC.PTRACE_SEIZE, _c.StubPid, 0, StubPtraceOptions, "PTRACE_SEIZE");
        RestoreTask.Req(LibC.PTRACE_INTERRUPT, _c.StubPid, 0, 0, "PTRACE_INTERRUPT");
        var stub = new RestoreTask(_c.StubPid, _c.StubPid);
        stub.WaitFirstStop();
        _c.Tasks[_c.StubPid] = stub;

        // syscall; int3 over the stub's entry, so calls can be injected before the control page exists.
        var elf = StubElf.Build(load);
        var word = BinaryPrimitives.ReadUInt64LittleEndian(elf.AsSpan(StubElf.EntryOffset));
        word = (word & ~0xFFFFFFUL) | 0xcc050fUL;
        stub.Poke(load + StubElf.EntryOffset, word);
        _c.Ctl = load + StubElf.EntryOffset; // until the real control page exists

        // A place for the control page and the vdso moves: free in the stub and in every dumped layout.
        var stubMaps = Crisp.Native.ProcFs.Proc.Maps(_c.StubPid).Select(v => (v.Start, v.End));
        var busy = all.Concat(stubMaps).ToList();
        ulong block = load + 0x1_0000_0000;
        while (Overlaps(busy, block, block + CtlBlockSize)) block += 0x1_0000_0000;
        _c.PendingCtl = block;
        _c.Temp = block + (2 << 20);
    }


    /// <summary>
    /// Starts the stub (StubElf.Start) with crisp's fds passed on from <see cref="_c.ExtraBase"/>, and
    /// the stub's own memfd just above them: its stdio is crisp's 0..2 where those are passed on.
    /// </summary>
    private int StartStubProcess(ulong load, List<(int Fd, int ChildFd)> extra) =>
        StubElf.Start(load, extraFds: extra,
            // Stdio is set up before the extra fds are dup'ed: crisp's own 0..2, when passed on
            // (-j, or --inherit-fd fd[0..2]), must stay what they are until then.
            stdin: extra.Any(e => e.Fd == 0) ? StdioSource.FromFd(0) : StdioSource.DevNull(false),
            stdout: extra.Any(e => e.Fd == 1) ? StdioSource.FromFd(1) : StdioSource.DevNull(true),
            stderr: extra.Any(e => e.Fd == 2) ? StdioSource.FromFd(2) : StdioSource.DevNull(true),
            execFd: _c.ExtraBase + extra.Count);

    private static bool Overlaps(List<(ulong Start, ulong End)> ranges, ulong s, ulong e) =>
        ranges.Any(r => r.Start < e && s < r.End);

    // ---- failure ---------------------------------------------------------------------

    private void KillEverything()
    {
        var pids = _c.Created.Where(t => _c.Tasks.TryGetValue(t, out var task) && task.Pid == t).ToList();
        if (_c.StubPid > 0) pids.Add(_c.StubPid);
        foreach (var pid in pids) LibC.kill(pid, LibC.SIGKILL);
        // Threads first: a leader reports its exit once the group is empty. Then children before
        // parents: a dying init of a nested pid namespace waits until crisp has reaped its traced children.
        var order = _c.Created.Where(t => !pids.Contains(t)).Concat(Enumerable.Reverse(pids));
        foreach (var tid in order)
        {
            try { PtraceCalls.Reap(tid); }
            catch (SyscallException) { }
        }
    }

    // ---- scratch memory in the control page --------------------------------------------

    /// <summary>
    /// Crisp.Inject's <see cref="ScratchArea"/> over the control page's data part (before the
    /// control page exists: over the stub's stack, which the stub never returns to); fills
    /// through process_vm_writev. The area is placed at the first use.
    /// </summary>
    private sealed class Scratch(RestoreSession s, int pid)
    {
        private ScratchArea? _area;

        private ScratchArea Area
        {
            get
            {
                if (_area != null) return _area;
                ulong baseAddr = s._c.Ctl == s._c.PendingCtl ? s._c.Ctl + ScratchOffset : (s._c.Tasks[pid].BaseRegs.rsp - 4096) & ~0xFUL;
                return _area = ScratchArea.Over(pid, baseAddr, CtlSize - ScratchOffset);
            }
        }

        public ulong Put(ReadOnlySpan<byte> data) => Area.Put(data);
        public ulong PutString(string str) => Area.PutString(str);
        public ulong PutStruct<T>(in T value) where T : unmanaged => Area.PutStruct(value);
        public ulong Reserve(int size) => Area.Reserve(size);
        public T ReadStruct<T>(ulong remote) where T : unmanaged => Area.ReadStruct<T>(remote);
    }
}
