using System.Buffers.Binary;
using System.Diagnostics;
using Crisp.Images;
using Crisp.Images.Proto;
using Crisp.Inject;
using Crisp.Native;

namespace Crisp.Checkpoint.Restore;

/// <summary>
/// Restore by morphing a stub (../shared/DESIGN.md, docs/ARCHITECTURE.md). The sequence, all on one ptrace thread:
///
///  1. read the images; refuse if a dumped pid/tid is in use;
///  2. start the stub ELF (S) and seize it; patch <c>syscall; int3</c> into its text;
///  3. from S, clone3(CLONE_PARENT, set_tid = root pid) → the root R, a child of crisp;
///     S is killed. In R: block every signal, map the control page C (code + scratch) at an
///     address free in the stub's and every dumped layout;
///  4. the tree: each process is cloned from its restored parent with set_tid (so it inherits
///     the parent's session and group), setsid right after it is made when it led a session,
///     then setpgid for group leaders and group members; threads by clone3(CLONE_THREAD…, set_tid);
///  5. morph each process: unmap what the stub had, move [vvar]/[vvar_vclock]/[vdso] to the
///     dumped addresses (through a temporary place so moves never overlap), map every VMA,
///     write the pages, madvise, PR_SET_MM_MAP; files; cwd/root/umask; sigactions; rlimits;
///     personality; per thread rseq, sigaltstack, clear_tid, robust list, comm; creds;
///     pending signals (queued while everything is blocked);
///  6. last: munmap(C) through a <c>syscall</c> in the restored vDSO (PTRACE_SYSCALL stops),
///     set registers, XSAVE and the blocked mask, detach.
/// On any failure every task crisp created is killed, and the CrispException names the step.
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
    private const long SYS_dup3 = 292, SYS_mremap = 25;
    private const ulong CLONE_VM = 0x100, CLONE_FS = 0x200, CLONE_FILES = 0x400, CLONE_SIGHAND = 0x800,
        CLONE_PARENT = 0x8000, CLONE_THREAD = 0x10000, CLONE_SYSVSEM = 0x40000;
    private const int CtlSize = 64 * 1024;
    private const ulong CtlBlockSize = 8 << 20;                          // control page + temporary place for vdso moves
    private const int ScratchOffset = 4096;

    private readonly RestoreOptions _o = options;
    private ImageDir _dir = null!;
    private List<ProcessImage> _procs = null!;
    private readonly List<ZombieImage> _zombies = [];
    private Dictionary<uint, FileEntry> _files = null!;
    private readonly Dictionary<int, RestoreTask> _tasks = new();          // tid → task
    private readonly List<int> _created = [];                            // every tid made, in order
    private int _stubPid = -1;
    private ulong _ctl;                                                  // control page address
    private ulong _temp;                                                 // temporary place for vdso moves
    private int _extraBase;                                              // first fd number of inherited fds
    private readonly List<int> _extraCrispFds = [];                      // crisp fds passed to the stub
    private string _step = "start";
    private readonly List<(string Step, TimeSpan Took)> _stepTimes = [];

    private ulong Code => _ctl;

    public RestoredProcess Run()
    {
        var clock = Stopwatch.StartNew();
        try
        {
            if (_o.Lazy) Step("connect to the lazy-pages daemon", ConnectLazyPages);
            Step("read images", LoadImages);
            Step("check pids", CheckPids);
            Step("create sockets", CreateSockets);
            Step("start the stub", StartStub);
            Step("create the root process", CreateRoot);
            Step("create the process tree", CreateTree);
            Step("create threads", CreateThreads);
            foreach (var p in _procs)
                RestoreProcess(p);
            CloseSharedCopies();
            Step("resume", ResumeAll);
        }
        catch (Exception e)
        {
            CloseSharedCopies();
            RemoveSocketFiles();
            KillEverything();
            _lazy?.Dispose();
            _lazy = null;
            if (e is CrispException ce && ce.Message.StartsWith("restore failed", StringComparison.Ordinal)) throw;
            throw new CrispException($"restore failed at step '{_step}': {e.Message}", e);
        }
        if (_o.PidFile != null)
            File.WriteAllText(_o.PidFile, _procs[0].Pid.ToString());
        return new RestoredProcess(_procs[0].Pid, _procs.Select(p => p.Pid).ToList(), clock.Elapsed) { Steps = _stepTimes };
    }

    private void Step(string name, Action a)
    {
        _step = name;
        long t0 = Stopwatch.GetTimestamp();
        a();
        var took = Stopwatch.GetElapsedTime(t0);
        _stepTimes.Add((name, took));
        Log.D($"restore: {name}: {took.TotalMilliseconds:F1} ms");
    }

    // ---- images and checks ------------------------------------------------------------

    private void LoadImages()
    {
        if (!Directory.Exists(_o.ImagesDir)) throw new CrispException($"images directory {_o.ImagesDir} does not exist");
        _dir = new ImageDir(_o.ImagesDir);
        _dir.ReadInventory();
        CheckCpu();
        _procs = ProcessImage.Load(_dir, _zombies);
        _files = _dir.Exists(ImageDir.FilesName) ? _dir.ReadFiles().ToDictionary(f => f.Id) : [];
        FindSharedFiles();
        foreach (var p in _procs)
            foreach (var v in p.Mm.Vmas)
                if ((v.Status & (VmaStatus.VMA_AREA_SYSVIPC | VmaStatus.VMA_AREA_SOCKET | VmaStatus.VMA_AREA_AIORING)) != 0)
                    throw new CrispException($"process {p.Pid}: VMA 0x{v.Start:x}-0x{v.End:x} (status 0x{v.Status:x}) is of a kind crisp cannot restore yet");
    }

    /// <summary>Refuses a dump from a CPU with features this one lacks (as --cpu-cap asks); images without a CPU record (CRIU's usual) are not checked.</summary>
    private void CheckCpu()
    {
        if (_o.CpuCap == Cpu.CpuCap.None || !_dir.Exists(ImageDir.CpuinfoName)) return;
        var dumped = _dir.ReadCpuinfo().X86Entry;
        if (dumped.Count != 1) throw new ImageException(_dir.PathOf(ImageDir.CpuinfoName), $"{dumped.Count} x86 CPU records, expected 1");
        var problems = Cpu.CpuFeatures.Compare(dumped[0], Cpu.CpuFeatures.Host(), _o.CpuCap);
        if (problems.Count > 0)
            throw new CrispException($"the tree was dumped on a CPU this one cannot stand in for ({string.Join("; ", problems)}); " +
                                     "--cpu-cap=none restores anyway, at the risk of SIGILL");
    }

    private void CheckPids()
    {
        foreach (var p in _procs)
            foreach (var (tid, _) in p.Threads)
                if (Directory.Exists($"/proc/{tid}") && !WaitForZombieRelease(tid))
                    throw new CrispException($"pid {tid} is in use by another process ({Comm(tid)})");
        foreach (var z in _zombies)
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
        var all = _procs.SelectMany(p => p.Mm.Vmas).Where(v => (v.Status & VmaStatus.VMA_AREA_VSYSCALL) == 0)
            .Select(v => (v.Start, v.End)).ToList();
        ulong load = StubElf.DefaultLoadAddress;
        while (Overlaps(all, load, load + 0x1000)) load += 0x10_0000_0000;

        // Fds crisp passes into the tree: --inherit-fd targets, and with -j crisp's stdio.
        int maxFd = _procs.SelectMany(p => p.Fds).Select(f => (int)f.Fd).DefaultIfEmpty(2).Max();
        _extraBase = Math.Max(maxFd + 1, 3);
        foreach (var fd in _o.InheritFds.Values.Distinct()) _extraCrispFds.Add(fd);
        if (_o.ShellJob) _extraCrispFds.AddRange([0, 1, 2]);
        var extra = _extraCrispFds.Select((fd, i) => (fd, _extraBase + i)).ToList();

        _stubPid = StartStubProcess(load, extra);
        const int opts = LibC.PTRACE_O_TRACESYSGOOD | LibC.PTRACE_O_TRACEFORK | LibC.PTRACE_O_TRACECLONE |
                         LibC.PTRACE_O_TRACEVFORK | LibC.PTRACE_O_EXITKILL;
        RestoreTask.Req(LibC.PTRACE_SEIZE, _stubPid, 0, opts, "PTRACE_SEIZE");
        RestoreTask.Req(LibC.PTRACE_INTERRUPT, _stubPid, 0, 0, "PTRACE_INTERRUPT");
        var stub = new RestoreTask(_stubPid, _stubPid);
        stub.WaitFirstStop();
        _tasks[_stubPid] = stub;

        // syscall; int3 over the stub's entry, so calls can be injected before the control page exists.
        var elf = StubElf.Build(load);
        var word = BinaryPrimitives.ReadUInt64LittleEndian(elf.AsSpan(StubElf.EntryOffset));
        word = (word & ~0xFFFFFFUL) | 0xcc050fUL;
        stub.Poke(load + StubElf.EntryOffset, word);
        _ctl = load + StubElf.EntryOffset; // until the real control page exists

        // A place for the control page and the vdso moves: free in the stub and in every dumped layout.
        var stubMaps = Crisp.Native.ProcFs.Proc.Maps(_stubPid).Select(v => (v.Start, v.End));
        var busy = all.Concat(stubMaps).ToList();
        ulong block = load + 0x1_0000_0000;
        while (Overlaps(busy, block, block + CtlBlockSize)) block += 0x1_0000_0000;
        _pendingCtl = block;
        _temp = block + (2 << 20);
    }

    private ulong _pendingCtl;

    /// <summary>
    /// Starts the stub from a memfd. The memfd is passed to the child as an ordinary fd (just above
    /// the inherited ones) and exec'ed as /proc/self/fd/N: posix_spawn closes every other fd before
    /// the exec, so a CLOEXEC or closed-by-file-action memfd would be gone by then (ENOENT).
    /// </summary>
    private int StartStubProcess(ulong load, List<(int Fd, int ChildFd)> extra)
    {
        var elf = StubElf.Build(load);
        int mfd = Errno.Check(LibC.memfd_create("crisp-stub", 0), "memfd_create", "crisp-stub");
        try
        {
            fixed (byte* p = elf)
                if (Errno.Check(LibC.write(mfd, p, (nuint)elf.Length), "write", "stub memfd") != elf.Length)
                    throw new SyscallException("write", Errno.EIO, "stub memfd: short write");
            int childFd = _extraBase + extra.Count;
            return ProcessSpawner.Spawn(new SpawnOptions
            {
                Path = $"/proc/self/fd/{childFd}",
                Argv = ["crisp-stub"],
                Envp = [],
                // Stdio is set up before the extra fds are dup'ed: crisp's own 0..2, when passed on
                // (-j, or --inherit-fd fd[0..2]), must stay what they are until then.
                Stdin = extra.Any(e => e.Fd == 0) ? StdioSource.FromFd(0) : StdioSource.DevNull(false),
                Stdout = extra.Any(e => e.Fd == 1) ? StdioSource.FromFd(1) : StdioSource.DevNull(true),
                Stderr = extra.Any(e => e.Fd == 2) ? StdioSource.FromFd(2) : StdioSource.DevNull(true),
                ExtraFds = [.. extra, (mfd, childFd)],
            });
        }
        finally
        {
            LibC.close(mfd);
        }
    }

    private static bool Overlaps(List<(ulong Start, ulong End)> ranges, ulong s, ulong e) =>
        ranges.Any(r => r.Start < e && s < r.End);

    /// <summary>clone3 from <paramref name="parent"/>; returns the new task, waited into its first stop.</summary>
    private RestoreTask Clone(RestoreTask parent, int pid, int tid, ulong flags, int exitSignal)
    {
        Span<byte> args = stackalloc byte[88];
        args.Clear();
        BinaryPrimitives.WriteUInt64LittleEndian(args, flags);
        BinaryPrimitives.WriteUInt64LittleEndian(args[32..], (ulong)exitSignal);
        var scratch = new Scratch(this, parent.Pid);
        ulong setTid = scratch.Put(BitConverter.GetBytes((int)tid));
        BinaryPrimitives.WriteUInt64LittleEndian(args[64..], setTid);
        BinaryPrimitives.WriteUInt64LittleEndian(args[72..], 1);
        ulong a = scratch.Put(args);
        long r = parent.Call(Code, LibC.SYS_clone3, (long)a, 88);
        if (r == -Errno.EEXIST)
            throw new CrispException($"pid {tid} is in use by another process ({Comm(tid)})");
        Errno.CheckRaw(r, "clone3", $"set_tid {tid} in {parent}");
        if (r != tid) throw new CrispException($"clone3 made {r}, not the dumped pid {tid}");
        var t = new RestoreTask(pid, tid);
        _created.Add(tid);
        _tasks[tid] = t;
        t.WaitFirstStop();
        return t;
    }

    private void CreateRoot()
    {
        var stub = _tasks[_stubPid];
        var rootImg = _procs[0];
        // clone3 wants exit_signal 0 with CLONE_PARENT; the child takes the stub's (SIGCHLD).
        var root = Clone(stub, rootImg.Pid, rootImg.Pid, CLONE_PARENT, 0);
        // The stub's job is done.
        LibC.kill(_stubPid, LibC.SIGKILL);
        while (true)
        {
            int s = RestoreTask.Wait(_stubPid);
            if (!LibC.WIFSTOPPED(s)) break;
            LibC.ptrace(LibC.PTRACE_CONT, _stubPid, 0, 0);
        }
        _tasks.Remove(_stubPid);
        _stubPid = -1;

        root.SetSigMask(ulong.MaxValue);
        ulong ctl = (ulong)root.Check(Code, "mmap control page", LibC.SYS_mmap, (long)_pendingCtl, CtlSize,
            LibC.PROT_READ | LibC.PROT_WRITE | LibC.PROT_EXEC, LibC.MAP_PRIVATE | LibC.MAP_ANONYMOUS | LibC.MAP_FIXED, -1, 0);
        RemoteMemory.Write(root.Pid, ctl, [0x0f, 0x05, 0xcc]);
        _ctl = ctl;
        if (rootImg.Sid == rootImg.Pid) root.Check(Code, "setsid", LibC.SYS_setsid);
    }

    /// <summary>
    /// Zombies are made with the living (they may lead a process group others join), and exit once
    /// every group is set up (Zombies.cs).
    /// </summary>
    private void CreateTree()
    {
        var all = _procs.Select(p => (p.Pid, p.Ppid, p.Pgid, p.Sid))
            .Concat(_zombies.Select(z => (z.Pid, z.Ppid, z.Pgid, z.Sid))).ToList();
        foreach (var p in all.Skip(1))
        {
            if (!_tasks.TryGetValue(p.Ppid, out var parent) || parent.Pid != p.Ppid)
                throw new CrispException($"process {p.Pid}: parent {p.Ppid} is not restored before it (pstree order)");
            var t = Clone(parent, p.Pid, p.Pid, 0, LibC.SIGCHLD);
            if (p.Sid == p.Pid) t.Check(Code, "setsid", LibC.SYS_setsid);
        }
        // Group leaders first, then members join them.
        foreach (var p in all.Where(p => p.Pgid == p.Pid && p.Sid != p.Pid))
            _tasks[p.Pid].Check(Code, "setpgid", LibC.SYS_setpgid, 0, 0);
        foreach (var p in all.Where(p => p.Pgid != p.Pid))
        {
            int cur = (int)LibC.Syscall(LibC.SYS_getpgid, p.Pid);
            if (cur == p.Pgid) continue;
            long r = _tasks[p.Pid].Call(Code, LibC.SYS_setpgid, 0, p.Pgid);
            if (r < 0) Log.W($"process {p.Pid}: cannot join process group {p.Pgid} ({Errno.Name((int)-r)}); stays in {cur}");
        }
        foreach (var p in all)
        {
            int sid = (int)LibC.Syscall(LibC.SYS_getsid, p.Pid);
            if (sid != p.Sid) Log.W($"process {p.Pid}: session {sid}, dumped in session {p.Sid} (not a session of the tree)");
        }
        foreach (var z in _zombies) ExitAsZombie(z);
    }

    private void CreateThreads()
    {
        const ulong flags = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD | CLONE_SYSVSEM;
        foreach (var p in _procs)
            foreach (var (tid, _) in p.Threads.Skip(1))
                Clone(_tasks[p.Pid], p.Pid, tid, flags, 0);
    }

    // ---- failure ---------------------------------------------------------------------

    private void KillEverything()
    {
        var pids = _created.Where(t => _tasks.TryGetValue(t, out var task) && task.Pid == t).ToList();
        if (_stubPid > 0) pids.Add(_stubPid);
        foreach (var pid in pids) LibC.kill(pid, LibC.SIGKILL);
        // Threads first: a leader reports its exit once the group is empty.
        var order = _created.Where(t => !pids.Contains(t)).Concat(pids);
        foreach (var tid in order)
        {
            try
            {
                while (true)
                {
                    int s = RestoreTask.Wait(tid);
                    if (!LibC.WIFSTOPPED(s)) break;
                    LibC.ptrace(LibC.PTRACE_CONT, tid, 0, 0);
                }
            }
            catch (SyscallException) { }
        }
    }

    // ---- scratch memory in the control page --------------------------------------------

    /// <summary>Bump allocator over the control page's data part; fills through process_vm_writev.</summary>
    private sealed class Scratch(RestoreSession s, int pid)
    {
        private ulong _used;

        public ulong Put(ReadOnlySpan<byte> data)
        {
            ulong at = Reserve(data.Length);
            RemoteMemory.Write(pid, at, data);
            return at;
        }

        public ulong PutString(string str)
        {
            var b = new byte[System.Text.Encoding.UTF8.GetByteCount(str) + 1];
            System.Text.Encoding.UTF8.GetBytes(str, b);
            return Put(b);
        }

        public ulong Reserve(int size)
        {
            ulong baseAddr = s._ctl == s._pendingCtl ? s._ctl + ScratchOffset : 0;
            if (baseAddr == 0)
            {
                // Before the control page exists: the stub's stack is usable (the stub never returns).
                baseAddr = s._tasks[pid].BaseRegs.rsp - 4096;
                baseAddr &= ~0xFUL;
            }
            ulong at = baseAddr + _used;
            _used = (_used + (ulong)size + 15) & ~15UL;
            if (_used > CtlSize - ScratchOffset) throw new InvalidOperationException("control page scratch is full");
            return at;
        }
    }
}
