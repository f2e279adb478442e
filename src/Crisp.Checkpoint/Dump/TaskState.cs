using System.Runtime.InteropServices;
using Crisp.Checkpoint.Cpu;
using Crisp.Images.Proto;
using Crisp.Inject;
using Crisp.Native;
using Crisp.Native.ProcFs;
using Google.Protobuf;

namespace Crisp.Checkpoint.Dump;

/// <summary>
/// Collects the per-process and per-thread state of a seized process into core entries:
/// registers, FPU/XSAVE, signal masks and queues, sigactions, rlimits, credentials, rseq,
/// sigaltstack, robust futex list, clear-tid address, itimers. What the kernel only tells the
/// task itself (sigactions, sigaltstack, PR_GET_TID_ADDRESS, itimers) is asked through
/// injected syscalls; everything else is read from outside.
/// </summary>
internal static unsafe class TaskState
{
    private const int SYS_getitimer = 36, SYS_get_robust_list = 274;
    private const int SYS_sched_getparam = 143, SYS_sched_getscheduler = 145;
    private const int PR_GET_CHILD_SUBREAPER = 37;
    private const int SCHED_DEADLINE = 6, SCHED_RESET_ON_FORK = 0x40000000;
    private const int NSIG = 64;

    [StructLayout(LayoutKind.Sequential)]
    private struct ITimerVal { public long isec, iusec, vsec, vusec; }

    /// <summary>
    /// Builds core entries for every thread (the leader's carries <c>tc</c>). <paramref name="treeTid"/>
    /// turns a tid as crisp sees it into the tid the dumped tree sees (they differ when the tree
    /// owns its pid namespace).
    /// </summary>
    public static Dictionary<int, CoreEntry> Collect(SeizedProcess proc, Func<int, int> treeTid)
    {
        int pid = proc.Pid;
        var status = Proc.Status(pid);
        var stat = Proc.Stat(pid);
        var cores = new Dictionary<int, CoreEntry>();

        // Things only the task can tell: ask once in the leader (process-wide state) ...
        List<SaEntry> sigactions;
        TaskTimersEntry timers;
        bool subreaper;
        // The leader's injector and scratch stay for the threads' calls below (the scratch is
        // the process's memory, every thread sees it; injectors at one address are disposed in
        // reverse order).
        using var leaderSys = proc.Inject(proc.Leader);
        using var scratch = leaderSys.MapScratch(4 * LibC.PageSize);
        {
            (sigactions, timers, subreaper) = ReadProcessWide(leaderSys, scratch);
            timers.Posix.AddRange(ReadPosixTimers(pid, leaderSys, scratch, treeTid));
        }
        uint loginuid = ReadUInt($"/proc/{pid}/loginuid", uint.MaxValue);

        foreach (var task in proc.Tasks)
        {
            var core = new CoreEntry { Mtype = CoreEntry.Types.March.X8664 };
            var regs = Registers.ApplyRestartFixup(task.SeizeRegs);
            var xstate = task.GetXState();
            ulong clearTid;
            LibC.stack_t sas;
            uint secbits, pdeathSig;
            // ... and per thread (sigaltstack and the clear-tid address are per thread).
            scratch.Reset();
            using (var sys = task == proc.Leader ? null : proc.Inject(task))
            {
                var on = sys ?? leaderSys;
                ulong sasAddr = scratch.Reserve(sizeof(LibC.stack_t));
                ulong tidAddr = scratch.Reserve(8);
                ulong sigAddr = scratch.Reserve(4);
                var r = on.CallAll(scratch, [
                    (LibC.SYS_sigaltstack, 0, (long)sasAddr, 0, 0),
                    (LibC.SYS_prctl, LibC.PR_GET_TID_ADDRESS, (long)tidAddr, 0, 0),
                    (LibC.SYS_prctl, LibC.PR_GET_SECUREBITS, 0, 0, 0),
                    (LibC.SYS_prctl, LibC.PR_GET_PDEATHSIG, (long)sigAddr, 0, 0),
                ]);
                string where = $"in {task}";
                Errno.CheckRaw(r[0], "sigaltstack", where);
                Errno.CheckRaw(r[1], "prctl(PR_GET_TID_ADDRESS)", where);
                secbits = (uint)Errno.CheckRaw(r[2], "prctl(PR_GET_SECUREBITS)", where);
                Errno.CheckRaw(r[3], "prctl(PR_GET_PDEATHSIG)", where);
                sas = scratch.ReadStruct<LibC.stack_t>(sasAddr);
                clearTid = scratch.ReadStruct<ulong>(tidAddr);
                pdeathSig = (uint)scratch.ReadStruct<int>(sigAddr);
            }
            var (policy, prio) = Sched(task.Tid);
            RefuseUnkept(pid, task.Tid, policy);
            // The audit login uid is per task, but CRIU's image keeps one per process.
            uint threadLoginuid = ReadUInt($"/proc/{pid}/task/{task.Tid}/loginuid", uint.MaxValue);
            if (threadLoginuid != loginuid)
                throw new CrispException($"thread {task.Tid} of {pid} has audit loginuid {threadLoginuid}, the process {loginuid}: " +
                                         "per-thread login uids cannot be kept in the image");

            core.ThreadInfo = new ThreadInfoX86
            {
                ClearTidAddr = clearTid,
                Gpregs = Registers.ToImage(regs),
                Fpregs = Xsave.ToImage(xstate),
            };

            var tstatus = task.Tid == pid ? status : Proc.TaskStatus(pid, task.Tid);
            var tstat = task.Tid == pid ? stat : Proc.TaskStat(pid, task.Tid);
            ulong robustHead = 0, robustLen = 0;
            if (LibC.Syscall(SYS_get_robust_list, task.Tid, (long)&robustHead, (long)&robustLen) < 0)
                throw Errno.Failure("get_robust_list", $"{task.Tid}");
            var rseq = task.GetRseq();
            var tc = new ThreadCoreEntry
            {
                FutexRla = robustHead,
                FutexRlaLen = (uint)robustLen,
                SchedNice = (int)tstat.Nice,
                SchedPolicy = policy,
                SchedPrio = prio,
                PdeathSig = pdeathSig,
                BlkSigset = task.GetSigMask(),
                Sas = new ThreadSasEntry { SsSp = sas.ss_sp, SsSize = sas.ss_size, SsFlags = (uint)sas.ss_flags },
                SignalsP = Queue(task.PeekPendingSignals(shared: false)),
                Creds = Creds(tstatus, secbits),
                Comm = ReadComm(pid, task.Tid),
            };
            if (rseq.rseq_abi_pointer != 0)
                tc.RseqEntry = new RseqEntry { RseqAbiPointer = rseq.rseq_abi_pointer, RseqAbiSize = rseq.rseq_abi_size, Signature = rseq.signature };
            core.ThreadCore = tc;

            if (task.Tid == pid)
            {
                var rl = new TaskRlimitsEntry();
                foreach (var (soft, hard) in Rlimits(pid))
                    rl.Rlimits.Add(new RlimitEntry { Cur = soft, Max = hard });
                var task0 = new TaskCoreEntry
                {
                    // At this point every thread is in a ptrace stop; what counts is whether it was job-control stopped before.
                    TaskState = proc.Leader.WasGroupStopped ? Crisp.Images.TaskStates.Stopped : Crisp.Images.TaskStates.Alive,
                    ExitCode = 0,
                    Personality = Convert.ToUInt32(File.ReadAllText($"/proc/{pid}/personality").Trim(), 16),
                    Flags = stat.Flags,
                    BlkSigset = tc.BlkSigset,
                    Comm = ReadComm(pid, pid),
                    Timers = timers,
                    Rlimits = rl,
                    SignalsS = Queue(task.PeekPendingSignals(shared: true)),
                    Loginuid = loginuid,
                    ChildSubreaper = subreaper,
                    OomScoreAdj = (int)ReadLong($"/proc/{pid}/oom_score_adj", 0),
                };
                // Which signal stopped it (CRIU's stop_signo): restore stops it with the same one (zdtm stopped03).
                if (proc.Leader.WasGroupStopped) task0.StopSigno = (uint)proc.Leader.StopSignal;
                task0.Sigactions.AddRange(sigactions);
                core.Tc = task0;
            }
            cores[task.Tid] = core;
        }
        return cores;
    }

    /// <summary>sizeof(LibC.kernel_sigaction) (StructLayoutTests holds it), as a constant for the fixed buffer below.</summary>
    private const int SigactionSize = 32;

    [StructLayout(LayoutKind.Sequential)]
    private struct ProcessWideOut
    {
        public fixed byte Sigactions[(NSIG - 2) * SigactionSize];
        public ITimerVal Real, Virt, Prof;
        public int Subreaper;
    }

    /// <summary>
    /// Sigactions (CRIU's layout: 62 entries, SIGKILL and SIGSTOP, which have no action, left
    /// out), the three itimers and the child-subreaper flag: 66 calls in the task, one batch.
    /// </summary>
    private static (List<SaEntry>, TaskTimersEntry, bool) ReadProcessWide(RemoteSyscall sys, ScratchArea scratch)
    {
        ulong outAt = scratch.Reserve(sizeof(ProcessWideOut));
        ulong Field(string name) => outAt + (ulong)Marshal.OffsetOf<ProcessWideOut>(name);
        var calls = new List<(long, long, long, long, long)>(NSIG + 2);
        var signals = new List<int>(NSIG - 2);
        for (int sig = 1; sig <= NSIG; sig++)
        {
            if (sig is LibC.SIGKILL or LibC.SIGSTOP) continue;
            calls.Add((LibC.SYS_rt_sigaction, sig, 0, (long)outAt + (long)SigactionSize * signals.Count, 8));
            signals.Add(sig);
        }
        calls.Add((SYS_getitimer, 0, (long)Field(nameof(ProcessWideOut.Real)), 0, 0));
        calls.Add((SYS_getitimer, 1, (long)Field(nameof(ProcessWideOut.Virt)), 0, 0));
        calls.Add((SYS_getitimer, 2, (long)Field(nameof(ProcessWideOut.Prof)), 0, 0));
        calls.Add((LibC.SYS_prctl, PR_GET_CHILD_SUBREAPER, (long)Field(nameof(ProcessWideOut.Subreaper)), 0, 0));
        var r = sys.CallAll(scratch, CollectionsMarshal.AsSpan(calls));
        string where = $"in {sys.Task}";
        for (int i = 0; i < signals.Count; i++) Errno.CheckRaw(r[i], $"rt_sigaction({signals[i]})", where);
        for (int i = 0; i < 3; i++) Errno.CheckRaw(r[signals.Count + i], "getitimer", where);
        Errno.CheckRaw(r[^1], "prctl(PR_GET_CHILD_SUBREAPER)", where);

        var o = scratch.ReadStruct<ProcessWideOut>(outAt);
        var list = new List<SaEntry>(signals.Count);
        var actions = new ReadOnlySpan<LibC.kernel_sigaction>(o.Sigactions, signals.Count);
        foreach (var sa in actions)
            list.Add(new SaEntry { Sigaction = sa.handler, Flags = sa.flags, Restorer = sa.restorer, Mask = sa.mask, CompatSigaction = false });
        static ItimerEntry Timer(in ITimerVal v) => new() { Isec = (ulong)v.isec, Iusec = (ulong)v.iusec, Vsec = (ulong)v.vsec, Vusec = (ulong)v.vusec };
        return (list, new TaskTimersEntry { Real = Timer(o.Real), Virt = Timer(o.Virt), Prof = Timer(o.Prof) }, o.Subreaper != 0);
    }

    private const int SYS_timer_gettime = 224, SYS_timer_getoverrun = 225;

    [StructLayout(LayoutKind.Sequential)]
    private struct ITimerSpec { public long isec, insec, vsec, vnsec; }

    /// <summary>
    /// POSIX timers (timer_create): id, clock, signal, sigev_value and notification from
    /// /proc/PID/timers (proc_timers_show), the time left and interval with an injected
    /// timer_gettime, the overrun with timer_getoverrun.
    /// </summary>
    private static List<PosixTimerEntry> ReadPosixTimers(int pid, RemoteSyscall sys, ScratchArea scratch, Func<int, int> treeTid)
    {
        var list = new List<PosixTimerEntry>();
        PosixTimerEntry? cur = null;
        ulong at = scratch.Reserve(sizeof(ITimerSpec));
        void Finish()
        {
            if (cur == null) return;
            sys.Check($"timer_gettime({cur.ItId})", SYS_timer_gettime, cur.ItId, (long)at);
            var v = scratch.ReadStruct<ITimerSpec>(at);
            (cur.Isec, cur.Insec, cur.Vsec, cur.Vnsec) = ((ulong)v.isec, (ulong)v.insec, (ulong)v.vsec, (ulong)v.vnsec);
            cur.Overrun = (uint)sys.Check($"timer_getoverrun({cur.ItId})", SYS_timer_getoverrun, cur.ItId);
            list.Add(cur);
            cur = null;
        }
        foreach (var raw in File.ReadAllLines($"/proc/{pid}/timers"))
        {
            int c = raw.IndexOf(':');
            if (c <= 0) continue;
            string key = raw[..c], val = raw[(c + 1)..].Trim();
            switch (key)
            {
                case "ID":
                    Finish();
                    cur = new PosixTimerEntry { ItId = uint.Parse(val) };
                    break;
                case "signal" when cur != null:
                    // "14/00007ffc12345678": signal number / sigev_value as a pointer
                    var sv = val.Split('/');
                    cur.SiSigno = uint.Parse(sv[0]);
                    cur.SivalPtr = sv.Length > 1 && sv[1] != "(null)" ? Convert.ToUInt64(sv[1], 16) : 0;
                    break;
                case "notify" when cur != null:
                    // "signal/pid.1234", "thread/tid.1235", "none/pid.1234"
                    var kind = val.Split('/', '.');
                    int who = int.Parse(kind[2]);
                    if (kind[1] == "tid")
                    {
                        // /proc/PID/timers names the thread as crisp's /proc sees it; the image
                        // carries it as the tree sees it (restore makes the timer inside the task).
                        cur.ItSigevNotify = LibC.SIGEV_THREAD_ID;
                        cur.NotifyThreadId = treeTid(who);
                    }
                    else cur.ItSigevNotify = kind[0] switch
                    {
                        "signal" => LibC.SIGEV_SIGNAL,
                        "thread" => LibC.SIGEV_THREAD,
                        "none" => LibC.SIGEV_NONE,
                        _ => throw new CrispException($"process {pid}: POSIX timer {cur.ItId} notifies as '{val}', which crisp does not know"),
                    };
                    break;
                case "ClockID" when cur != null:
                    cur.ClockId = (uint)int.Parse(val);
                    break;
            }
        }
        Finish();
        return list;
    }

    private static SignalQueueEntry Queue(List<SigInfo> signals)
    {
        var q = new SignalQueueEntry();
        foreach (var si in signals)
        {
            var copy = si;
            q.Signals.Add(new SiginfoEntry { Siginfo = ByteString.CopyFrom(new ReadOnlySpan<byte>(&copy, sizeof(SigInfo))) });
        }
        return q;
    }

    private const int SYS_ioprio_get = 252, IOPRIO_WHO_PROCESS = 1;

    /// <summary>
    /// Per-thread state CRIU's image has no field for, which a restored thread would silently get
    /// from crisp instead: refused when it differs from what crisp itself has (and so what the
    /// restored thread would start with). See docs/PROCESS-STATE.md.
    /// </summary>
    private static void RefuseUnkept(int pid, int tid, uint policy)
    {
        var mine = Proc.Status(Environment.ProcessId).Fields;
        var its = Proc.TaskStatus(pid, tid).Fields;
        string who = tid == pid ? $"process {pid}" : $"thread {tid} of {pid}";
        foreach (var (field, what) in new[]
                 {
                     ("Cpus_allowed_list", "its CPU affinity (sched_setaffinity)"),
                     ("Mems_allowed_list", "its NUMA memory nodes"),
                     ("Speculation_Store_Bypass", "its speculation control (PR_SET_SPECULATION_CTRL)"),
                     ("SpeculationIndirectBranch", "its speculation control (PR_SET_SPECULATION_CTRL)"),
                 })
        {
            mine.TryGetValue(field, out var a);
            its.TryGetValue(field, out var b);
            if (a != b)
                throw new CrispException($"{who}: {what} is '{b}' where a restored one would get '{a}': crisp cannot restore it yet");
        }
        // timerslack_ns exists for the thread-group leader only (proc's tgid entries). A realtime
        // task has no slack (0), and gets 0 again from sched_setscheduler at restore.
        bool realtime = (policy & ~(uint)SCHED_RESET_ON_FORK) is 1 or 2; // SCHED_FIFO, SCHED_RR
        string slackMine = File.ReadAllText($"/proc/{Environment.ProcessId}/timerslack_ns").Trim();
        string slackIts = tid == pid && !realtime ? File.ReadAllText($"/proc/{pid}/timerslack_ns").Trim() : slackMine;
        if (slackMine != slackIts)
            throw new CrispException($"{who}: its timer slack (PR_SET_TIMERSLACK) is {slackIts} ns where a restored one would get {slackMine}: crisp cannot restore it yet");
        long ioprio = LibC.Syscall(SYS_ioprio_get, IOPRIO_WHO_PROCESS, tid);
        long ioprioMine = LibC.Syscall(SYS_ioprio_get, IOPRIO_WHO_PROCESS, 0);
        if (ioprio >= 0 && ioprio != ioprioMine)
            throw new CrispException($"{who}: its I/O priority (ioprio_set) is 0x{ioprio:x} where a restored one would get 0x{ioprioMine:x}: crisp cannot restore it yet");
    }

    /// <summary>Scheduling policy (with SCHED_RESET_ON_FORK) and static priority, read from outside.</summary>
    private static (uint Policy, uint Prio) Sched(int tid)
    {
        long policy = LibC.Syscall(SYS_sched_getscheduler, tid);
        Errno.Check(policy, "sched_getscheduler", $"{tid}");
        if ((policy & ~SCHED_RESET_ON_FORK) == SCHED_DEADLINE)
            throw new CrispException($"thread {tid} runs under SCHED_DEADLINE: crisp cannot restore its runtime/deadline/period yet");
        int prio = 0;
        if (LibC.Syscall(SYS_sched_getparam, tid, (long)&prio) < 0)
            throw Errno.Failure("sched_getparam", $"{tid}");
        return ((uint)policy, (uint)prio);
    }

    private static CredsEntry Creds(ProcStatus s, uint secbits)
    {
        var c = new CredsEntry
        {
            Uid = s.Uid[0], Euid = s.Uid[1], Suid = s.Uid[2], Fsuid = s.Uid[3],
            Gid = s.Gid[0], Egid = s.Gid[1], Sgid = s.Gid[2], Fsgid = s.Gid[3],
            Secbits = secbits,
            NoNewPrivs = (uint)s.NoNewPrivs,
        };
        Caps(c.CapInh, s.CapInh);
        Caps(c.CapPrm, s.CapPrm);
        Caps(c.CapEff, s.CapEff);
        Caps(c.CapBnd, s.CapBnd);
        Caps(c.CapAmb, s.CapAmb);
        c.Groups.AddRange(s.Groups);
        return c;
    }

    private static void Caps(Google.Protobuf.Collections.RepeatedField<uint> f, ulong v)
    {
        f.Add((uint)v);
        f.Add((uint)(v >> 32));
    }

    private static string ReadComm(int pid, int tid) => File.ReadAllText($"/proc/{pid}/task/{tid}/comm").TrimEnd('\n');

    private static uint ReadUInt(string path, uint fallback)
    {
        try { return uint.Parse(File.ReadAllText(path).Trim()); }
        catch (Exception e) when (e is IOException or FormatException or OverflowException) { return fallback; }
    }

    private static long ReadLong(string path, long fallback)
    {
        try { return long.Parse(File.ReadAllText(path).Trim()); }
        catch (Exception e) when (e is IOException or FormatException) { return fallback; }
    }

    /// <summary>
    /// The process's rlimits: prlimit, or /proc/PID/limits where prlimit is refused because the
    /// process's credentials differ from crisp's and crisp lacks CAP_SYS_RESOURCE.
    /// </summary>
    private static List<(ulong Soft, ulong Hard)> Rlimits(int pid)
    {
        var list = new List<(ulong, ulong)>();
        for (int r = 0; r < LibC.RLIM_NLIMITS; r++)
        {
            LibC.RLimit old;
            if (LibC.prlimit(pid, r, null, &old) != 0)
            {
                if (Errno.Last != Errno.EPERM) throw Errno.Failure("prlimit", $"{pid}, resource {r}");
                var text = Limits.Read(pid);
                if (text.Count < LibC.RLIM_NLIMITS)
                    throw new CrispException($"process {pid}: /proc/{pid}/limits has {text.Count} limits, not {LibC.RLIM_NLIMITS}");
                return text.Take(LibC.RLIM_NLIMITS).ToList();
            }
            list.Add((old.rlim_cur, old.rlim_max));
        }
        return list;
    }
}
