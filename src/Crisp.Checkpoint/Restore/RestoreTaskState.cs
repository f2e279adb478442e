using Crisp.Checkpoint.Cpu;
using System.Buffers.Binary;
using System.Runtime.Intrinsics.X86;
using Crisp.Images;
using Crisp.Images.Proto;
using Crisp.Inject;
using Crisp.Native;

namespace Crisp.Checkpoint.Restore;

/// <summary>Files, fs, signals, limits, per-thread state, credentials, and the final resume.</summary>
internal sealed unsafe partial class RestoreSession
{

    // ---- fs -----------------------------------------------------------------------------

    private void RestoreFs(ProcessImage p, RestoreTask t)
    {
        if (p.Fs == null) return;
        var scratch = new Scratch(this, t.Pid);
        string root = FilePath(p.Fs.RootId, "root");
        string cwd = FilePath(p.Fs.CwdId, "cwd");
        if (!Directory.Exists(cwd)) throw new CrispException($"directory {cwd} is gone (cwd of process {p.Pid})");
        // Both paths are as crisp sees them: the cwd is entered before the chroot makes it unreachable by name (zdtm chroot).
        t.Check(Code, $"chdir {cwd}", LibC.SYS_chdir, (long)scratch.PutString(cwd));
        if (root != "/") t.Check(Code, $"chroot {root}", LibC.SYS_chroot, (long)scratch.PutString(root));
        if (p.Fs.HasUmask) t.Call(Code, LibC.SYS_umask, p.Fs.Umask);
    }

    // ---- signals, limits, task --------------------------------------------------------------

    /// <summary>The image's sigaction of <paramref name="signo"/>; null if it is SIG_DFL (as the stub has it).</summary>
    private static SaEntry? SigactionOf(ProcessImage p, int signo)
    {
        var sa = p.LeaderCore.Tc?.Sigactions;
        if (sa == null || sa.Count == 0) return null;
        int idx = 0;
        for (int sig = 1; sig <= 64; sig++)
        {
            SaEntry e;
            if (sa.Count >= 64) e = sa[sig - 1];
            else
            {
                if (sig is LibC.SIGKILL or LibC.SIGSTOP) continue;
                if (idx >= sa.Count) break;
                e = sa[idx++];
            }
            if (sig != signo) continue;
            return e.Sigaction == 0 && e.Flags == 0 && e.Mask == 0 ? null : e;
        }
        return null;
    }

    private void RestoreSigactions(ProcessImage p, RestoreTask t)
    {
        var scratch = new Scratch(this, t.Pid);
        for (int sig = 1; sig <= 64; sig++)
        {
            if (sig is LibC.SIGKILL or LibC.SIGSTOP || SigactionOf(p, sig) is not { } e) continue;
            t.Check(Code, $"rt_sigaction({sig})", LibC.SYS_rt_sigaction, sig, (long)PutSigaction(scratch, e), 0, 8);
        }
    }

    private static ulong PutSigaction(Scratch scratch, SaEntry e) =>
        scratch.PutStruct(new LibC.kernel_sigaction { handler = e.Sigaction, flags = e.Flags, restorer = e.Restorer, mask = e.Mask });

    private void RestoreRlimits(ProcessImage p)
    {
        var rl = p.LeaderCore.Tc?.Rlimits?.Rlimits;
        if (rl == null) return;
        for (int res = 0; res < rl.Count && res < LibC.RLIM_NLIMITS; res++)
        {
            LibC.RLimit cur;
            Errno.Check(LibC.prlimit(p.Pid, res, null, &cur), "prlimit", $"{p.Pid} resource {res}");
            var want = new LibC.RLimit { rlim_cur = rl[res].Cur, rlim_max = rl[res].Max };
            if (want.rlim_cur == cur.rlim_cur && want.rlim_max == cur.rlim_max) continue;
            if (want.rlim_max > cur.rlim_max)
            {
                Log.W($"process {p.Pid}: rlimit {res}: hard limit {want.rlim_max} above {cur.rlim_max} needs CAP_SYS_RESOURCE; keeping {cur.rlim_max}");
                want.rlim_max = cur.rlim_max;
                want.rlim_cur = Math.Min(want.rlim_cur, want.rlim_max);
            }
            if (LibC.prlimit(p.Pid, res, &want, null) != 0)
                Log.W($"process {p.Pid}: rlimit {res}: {Errno.Name(Errno.Last)}");
        }
    }

    private void RestoreTaskState(ProcessImage p, RestoreTask t)
    {
        var tc = p.LeaderCore.Tc;
        if (tc == null) return;
        if (tc.Personality != 0) t.Check(Code, "personality", LibC.SYS_personality, tc.Personality);
        if (tc.HasOomScoreAdj && tc.OomScoreAdj != 0)
            File.WriteAllText($"/proc/{p.Pid}/oom_score_adj", tc.OomScoreAdj.ToString());
        if (tc.HasChildSubreaper && tc.ChildSubreaper)
            t.Check(Code, "prctl(PR_SET_CHILD_SUBREAPER)", LibC.SYS_prctl, LibC.PR_SET_CHILD_SUBREAPER, 1);
        if (tc.TaskState is not (TaskStates.Alive or TaskStates.Stopped))
            Log.W($"process {p.Pid}: dumped in state {tc.TaskState}; restored as running");
    }

    private void RestoreThreadState(ProcessImage p, RestoreTask t, CoreEntry core)
    {
        var scratch = new Scratch(this, t.Pid);
        var tc = core.ThreadCore;
        string? comm = tc?.HasComm == true ? tc.Comm : core.Tc?.Comm;
        if (!string.IsNullOrEmpty(comm))
            t.Check(Code, "prctl(PR_SET_NAME)", LibC.SYS_prctl, LibC.PR_SET_NAME, (long)scratch.PutString(comm));
        if (core.ThreadInfo is { } ti && ti.ClearTidAddr != 0)
            t.Check(Code, "set_tid_address", LibC.SYS_set_tid_address, (long)ti.ClearTidAddr);
        if (tc == null) return;
        if (tc.FutexRla != 0)
            t.Check(Code, "set_robust_list", LibC.SYS_set_robust_list, (long)tc.FutexRla, tc.FutexRlaLen);
        if (tc.Sas is { } sas && (sas.SsFlags & 2) == 0)
        {
            var st = new LibC.stack_t { ss_sp = sas.SsSp, ss_flags = (int)(sas.SsFlags & ~1u), ss_size = sas.SsSize };
            t.Check(Code, "sigaltstack", LibC.SYS_sigaltstack, (long)scratch.PutStruct(st), 0);
        }
        if (tc.RseqEntry is { } rs && rs.RseqAbiPointer != 0)
            t.Check(Code, "rseq", LibC.SYS_rseq, (long)rs.RseqAbiPointer, rs.RseqAbiSize, 0, rs.Signature);
    }

    private const int PR_CAPBSET_DROP = 24, PR_CAP_AMBIENT = 47, PR_CAP_AMBIENT_RAISE = 2;
    private const int SECURE_NO_SETUID_FIXUP = 2;

    /// <summary>
    /// Credentials of every thread, in the order that keeps the rights each step needs (CRIU's
    /// restore_creds does the same): supplementary groups; uids/gids with SECURE_NO_SETUID_FIXUP
    /// set, so leaving uid 0 does not clear the capability sets; the dumped securebits; the
    /// bounding set trimmed (needs CAP_SETPCAP, so before capset); capset; ambient raised (needs
    /// the bit in permitted and inheritable, so after capset); no_new_privs. Each call is checked:
    /// a thread that cannot get its dumped credentials makes the restore fail.
    /// </summary>
    private void RestoreCreds(ProcessImage p)
    {
        int lastCap = int.Parse(File.ReadAllText("/proc/sys/kernel/cap_last_cap").Trim());
        foreach (var (tid, core) in p.Threads)
        {
            var c = core.ThreadCore?.Creds;
            if (c == null) continue;
            var t = _c.Tasks[tid];
            var now = Crisp.Native.ProcFs.Proc.TaskStatus(p.Pid, tid);
            var scratch = new Scratch(this, t.Pid);
            if (!now.Groups.SequenceEqual(c.Groups))
            {
                var groups = new byte[c.Groups.Count * 4];
                for (int i = 0; i < c.Groups.Count; i++) BinaryPrimitives.WriteUInt32LittleEndian(groups.AsSpan(i * 4), c.Groups[i]);
                t.Check(Code, "setgroups", LibC.SYS_setgroups, c.Groups.Count, groups.Length > 0 ? (long)scratch.Put(groups) : 0);
            }
            bool sameIds = now.Uid.SequenceEqual([c.Uid, c.Euid, c.Suid, c.Fsuid]) && now.Gid.SequenceEqual([c.Gid, c.Egid, c.Sgid, c.Fsgid]);
            if (!sameIds)
            {
                t.Check(Code, "prctl(PR_SET_SECUREBITS, SECURE_NO_SETUID_FIXUP)", LibC.SYS_prctl, LibC.PR_SET_SECUREBITS, 1 << SECURE_NO_SETUID_FIXUP);
                t.Check(Code, "setresgid", LibC.SYS_setresgid, c.Gid, c.Egid, c.Sgid);
                t.Call(Code, LibC.SYS_setfsgid, c.Fsgid);
                if (t.Call(Code, LibC.SYS_setfsgid, uint.MaxValue) != c.Fsgid)
                    throw new CrispException($"{t}: setfsgid({c.Fsgid}) did not take");
                t.Check(Code, "setresuid", LibC.SYS_setresuid, c.Uid, c.Euid, c.Suid);
                t.Call(Code, LibC.SYS_setfsuid, c.Fsuid);
                if (t.Call(Code, LibC.SYS_setfsuid, uint.MaxValue) != c.Fsuid)
                    throw new CrispException($"{t}: setfsuid({c.Fsuid}) did not take");
            }
            if (t.Call(Code, LibC.SYS_prctl, LibC.PR_GET_SECUREBITS) != c.Secbits)
                t.Check(Code, $"prctl(PR_SET_SECUREBITS, 0x{c.Secbits:x})", LibC.SYS_prctl, LibC.PR_SET_SECUREBITS, c.Secbits);

            ulong bnd = Caps(c.CapBnd), prm = Caps(c.CapPrm), eff = Caps(c.CapEff), inh = Caps(c.CapInh), amb = Caps(c.CapAmb);
            ulong have = now.CapBnd;
            ulong valid = lastCap >= 63 ? ulong.MaxValue : (1UL << (lastCap + 1)) - 1;
            if (c.CapBnd.Count == 0) bnd = have; // an image without a bounding set: leave it as it is
            if ((bnd & valid & ~have) != 0)
                throw new CrispException($"{t}: its bounding set 0x{bnd:x} has capabilities crisp's own lacks (0x{bnd & valid & ~have:x}); " +
                                         "they cannot be given back");
            for (int cap = 0; cap <= lastCap; cap++)
                if ((bnd & (1UL << cap)) == 0 && (have & (1UL << cap)) != 0)
                    t.Check(Code, $"prctl(PR_CAPBSET_DROP, {cap})", LibC.SYS_prctl, PR_CAPBSET_DROP, cap);
            if (c.CapEff.Count > 0 || c.CapPrm.Count > 0 || c.CapInh.Count > 0)
            {
                var hdr = new byte[8];
                BinaryPrimitives.WriteUInt32LittleEndian(hdr, 0x20080522u); // _LINUX_CAPABILITY_VERSION_3, pid 0
                var data = new byte[24];
                for (int i = 0; i < 2; i++)
                {
                    BinaryPrimitives.WriteUInt32LittleEndian(data.AsSpan(i * 12), (uint)(eff >> (32 * i)));
                    BinaryPrimitives.WriteUInt32LittleEndian(data.AsSpan(i * 12 + 4), (uint)(prm >> (32 * i)));
                    BinaryPrimitives.WriteUInt32LittleEndian(data.AsSpan(i * 12 + 8), (uint)(inh >> (32 * i)));
                }
                t.Check(Code, $"capset(eff 0x{eff:x}, prm 0x{prm:x}, inh 0x{inh:x})", LibC.SYS_capset, (long)scratch.Put(hdr), (long)scratch.Put(data));
            }
            for (int cap = 0; cap <= lastCap; cap++)
                if ((amb & (1UL << cap)) != 0)
                    t.Check(Code, $"prctl(PR_CAP_AMBIENT_RAISE, {cap})", LibC.SYS_prctl, PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap);
            if (c.HasNoNewPrivs && c.NoNewPrivs != 0)
                t.Check(Code, "prctl(PR_SET_NO_NEW_PRIVS)", LibC.SYS_prctl, LibC.PR_SET_NO_NEW_PRIVS, 1);
        }
    }

    private static ulong Caps(Google.Protobuf.Collections.RepeatedField<uint> words)
    {
        ulong v = 0;
        for (int i = 0; i < words.Count && i < 2; i++) v |= (ulong)words[i] << (32 * i);
        return v;
    }

    private const long SYS_setitimer = 38, SYS_setpriority = 141, SYS_sched_setscheduler = 144;

    /// <summary>
    /// The audit login uid of every thread. Only the task itself may write it (through
    /// /proc/thread-self/loginuid), and changing a set one needs CAP_AUDIT_CONTROL: so this runs
    /// before the credentials are lowered.
    /// </summary>
    private void RestoreLoginuid(ProcessImage p)
    {
        var tc = p.LeaderCore.Tc;
        if (tc == null || !tc.HasLoginuid) return;
        foreach (var (tid, _) in p.Threads)
        {
            var now = File.ReadAllText($"/proc/{p.Pid}/task/{tid}/loginuid").Trim();
            if (now == tc.Loginuid.ToString()) continue;
            var t = _c.Tasks[tid];
            var scratch = new Scratch(this, t.Pid);
            int fd = (int)t.Check(Code, "openat /proc/thread-self/loginuid", LibC.SYS_openat, -100,
                (long)scratch.PutString("/proc/thread-self/loginuid"), LibC.O_WRONLY | LibC.O_CLOEXEC, 0);
            var text = System.Text.Encoding.ASCII.GetBytes(tc.Loginuid.ToString());
            long w = t.Call(Code, LibC.SYS_write, fd, (long)scratch.Put(text), text.Length);
            t.Call(Code, LibC.SYS_close, fd);
            Errno.CheckRaw(w, $"write loginuid {tc.Loginuid}", t.ToString());
        }
    }

    /// <summary>
    /// State a credentials change would reset, or that should start counting only now: the
    /// dumpable flag and the parent-death signal (both cleared by commit_creds when ids or
    /// capabilities change), scheduling policy, priority and nice, membarrier registrations,
    /// and the interval timers, armed last with what was left of them at dump time.
    /// </summary>
    private void RestoreLateState(ProcessImage p)
    {
        var leader = _c.Tasks[p.Pid];
        if (p.Mm.HasDumpable && leader.Call(Code, LibC.SYS_prctl, LibC.PR_GET_DUMPABLE) != p.Mm.Dumpable)
            leader.Check(Code, $"prctl(PR_SET_DUMPABLE, {p.Mm.Dumpable})", LibC.SYS_prctl, LibC.PR_SET_DUMPABLE, p.Mm.Dumpable);
        foreach (var (tid, core) in p.Threads)
        {
            var tc = core.ThreadCore;
            if (tc == null) continue;
            var t = _c.Tasks[tid];
            if (tc.PdeathSig != 0)
                t.Check(Code, $"prctl(PR_SET_PDEATHSIG, {tc.PdeathSig})", LibC.SYS_prctl, LibC.PR_SET_PDEATHSIG, tc.PdeathSig);
            if (tc.HasSchedPolicy)
            {
                int prio = (int)tc.SchedPrio;
                if (LibC.Syscall(SYS_sched_setscheduler, tid, tc.SchedPolicy, (long)&prio) < 0)
                    throw Errno.Failure("sched_setscheduler", $"{t}, policy 0x{tc.SchedPolicy:x} priority {prio}");
            }
            if (tc.HasSchedNice && LibC.Syscall(SYS_setpriority, 0 /* PRIO_PROCESS */, tid, tc.SchedNice) < 0)
                throw Errno.Failure("setpriority", $"{t}, nice {tc.SchedNice}");
        }
        var task = p.LeaderCore.Tc;
        if (task == null) return;
        for (int bit = 0; bit < 32; bit++)
            if ((task.MembarrierRegistrationMask & (1u << bit)) != 0)
                leader.Check(Code, $"membarrier(1 << {bit})", LibC.SYS_membarrier, 1L << bit, 0, 0);
        if (task.Timers is { } timers)
        {
            RestorePosixTimers(p, leader, timers);
            var scratch = new Scratch(this, leader.Pid);
            Span<byte> v = stackalloc byte[32];
            foreach (var (which, e) in new[] { (0, timers.Real), (1, timers.Virt), (2, timers.Prof) })
            {
                if (e == null || (e.Isec | e.Iusec | e.Vsec | e.Vusec) == 0) continue;
                BinaryPrimitives.WriteUInt64LittleEndian(v, e.Isec);
                BinaryPrimitives.WriteUInt64LittleEndian(v[8..], e.Iusec);
                BinaryPrimitives.WriteUInt64LittleEndian(v[16..], e.Vsec);
                BinaryPrimitives.WriteUInt64LittleEndian(v[24..], e.Vusec);
                leader.Check(Code, $"setitimer({which})", SYS_setitimer, which, (long)scratch.Put(v), 0);
            }
        }
    }

    private const long SYS_timer_create = 222, SYS_timer_settime = 223;
    private const int PR_TIMER_CREATE_RESTORE_IDS = 77;

    /// <summary>
    /// POSIX timers with their dumped ids: with PR_TIMER_CREATE_RESTORE_IDS on (Linux 6.15+),
    /// timer_create takes the id from *created_timer_id. Armed with what was left at dump time;
    /// the overrun count of a signal not yet delivered is not restorable and starts again at 0.
    /// </summary>
    private void RestorePosixTimers(ProcessImage p, RestoreTask leader, TaskTimersEntry timers)
    {
        if (timers.Posix.Count == 0) return;
        long on = leader.Call(Code, LibC.SYS_prctl, PR_TIMER_CREATE_RESTORE_IDS, 1);
        if (on == -Errno.EINVAL)
            throw new CrispException($"process {p.Pid} has POSIX timers, and this kernel cannot create them with given ids " +
                                     "(PR_TIMER_CREATE_RESTORE_IDS, Linux 6.15+)");
        Errno.CheckRaw(on, "prctl(PR_TIMER_CREATE_RESTORE_IDS, ON)", leader.ToString());
        var scratch = new Scratch(this, leader.Pid);
        ulong sevAt = scratch.Reserve(64), idAt = scratch.Reserve(4), valAt = scratch.Reserve(32);
        Span<byte> sev = stackalloc byte[64];
        Span<byte> val = stackalloc byte[32];
        Span<byte> got = stackalloc byte[4];
        try
        {
            foreach (var t in timers.Posix)
            {
                sev.Clear();
                BinaryPrimitives.WriteUInt64LittleEndian(sev, t.SivalPtr);
                BinaryPrimitives.WriteUInt32LittleEndian(sev[8..], t.SiSigno);
                BinaryPrimitives.WriteUInt32LittleEndian(sev[12..], t.ItSigevNotify);
                BinaryPrimitives.WriteInt32LittleEndian(sev[16..], t.ItSigevNotify == LibC.SIGEV_THREAD_ID ? OwnViewPid(t.NotifyThreadId) : t.NotifyThreadId);
                RemoteMemory.Write(leader.Pid, sevAt, sev);
                RemoteMemory.Write(leader.Pid, idAt, BitConverter.GetBytes(t.ItId));
                leader.Check(Code, $"timer_create(clock {(int)t.ClockId}, id {t.ItId})", SYS_timer_create, (int)t.ClockId, (long)sevAt, (long)idAt);
                RemoteMemory.Read(leader.Pid, idAt, got);
                if (BinaryPrimitives.ReadUInt32LittleEndian(got) != t.ItId)
                    throw new CrispException($"process {p.Pid}: timer_create made timer {BinaryPrimitives.ReadUInt32LittleEndian(got)}, not the dumped {t.ItId}");
            }
        }
        finally
        {
            leader.Call(Code, LibC.SYS_prctl, PR_TIMER_CREATE_RESTORE_IDS, 0);
        }
        foreach (var t in timers.Posix)
        {
            if ((t.Isec | t.Insec | t.Vsec | t.Vnsec) == 0) continue;
            BinaryPrimitives.WriteUInt64LittleEndian(val, t.Isec);
            BinaryPrimitives.WriteUInt64LittleEndian(val[8..], t.Insec);
            BinaryPrimitives.WriteUInt64LittleEndian(val[16..], t.Vsec);
            BinaryPrimitives.WriteUInt64LittleEndian(val[24..], t.Vnsec);
            RemoteMemory.Write(leader.Pid, valAt, val);
            leader.Check(Code, $"timer_settime({t.ItId})", SYS_timer_settime, t.ItId, 0, (long)valAt, 0);
        }
    }

    private void QueuePendingSignals(ProcessImage p)
    {
        var leader = _c.Tasks[p.Pid];
        // Every int3 of the injected calls before forced a SIGTRAP, and a forced signal that is
        // blocked gets unblocked (and its handler reset if ignored): block everything again, so
        // what is queued now stays pending until the final mask (SetFinalRegisters), and give
        // SIGTRAP its handler back. From here on no int3 runs (CallViaSyscallStops).
        foreach (var (tid, _) in p.Threads) _c.Tasks[tid].SetSigMask(ulong.MaxValue);
        if (SigactionOf(p, LibC.SIGTRAP) is { } trap)
        {
            ulong sa = PutSigaction(new Scratch(this, leader.Pid), trap);
            Errno.CheckRaw(leader.CallViaSyscallStops(Code, LibC.SYS_rt_sigaction, LibC.SIGTRAP, (long)sa, 0, 8), "rt_sigaction(SIGTRAP)", $"in {leader}");
        }
        var shared = p.LeaderCore.Tc?.SignalsS?.Signals;
        if (shared != null)
            foreach (var s in shared) Queue(leader, s, LibC.SYS_rt_sigqueueinfo, OwnViewPid(p.DumpedPid), 0);
        // The calls run in the task: pids as it sees them, in its own pid namespace (the dumped
        // ones unless it is below the root's).
        for (int i = 0; i < p.Threads.Count; i++)
        {
            var (tid, core) = p.Threads[i];
            var priv = core.ThreadCore?.SignalsP?.Signals;
            if (priv == null) continue;
            foreach (var s in priv) Queue(_c.Tasks[tid], s, LibC.SYS_rt_tgsigqueueinfo, OwnViewPid(p.DumpedPid), OwnViewPid(p.DumpedTids[i]));
        }
    }

    private void Queue(RestoreTask t, SiginfoEntry s, long nr, int pid, int tid)
    {
        var info = s.Siginfo.ToByteArray();
        int sig = BinaryPrimitives.ReadInt32LittleEndian(info);
        var scratch = new Scratch(this, t.Pid);
        ulong at = scratch.Put(info);
        // Through syscall stops, not the int3 (RestoreTask.CallViaSyscallStops): a pending SIGTRAP stays pending.
        if (nr == LibC.SYS_rt_sigqueueinfo) Errno.CheckRaw(t.CallViaSyscallStops(Code, nr, pid, sig, (long)at), "rt_sigqueueinfo", $"in {t}");
        else Errno.CheckRaw(t.CallViaSyscallStops(Code, nr, pid, tid, sig, (long)at), "rt_tgsigqueueinfo", $"in {t}");
    }

    // ---- registers and resume --------------------------------------------------------------

    private void ResumeAll()
    {
        foreach (var p in _c.Procs)
        {
            var leader = _c.Tasks[p.Pid];
            // The control page goes last, through a syscall instruction of the restored vDSO, or
            // of any restored executable mapping when the process had unmapped its vDSO.
            ulong sc = _c.VdsoSyscall.GetValueOrDefault(p.Pid);
            if (sc == 0) sc = FindSyscallInText(p);
            if (sc == 0) throw new CrispException($"process {p.Pid}: no syscall instruction in its vDSO or executable mappings to remove the control page with");
            long r = leader.CallViaSyscallStops(sc, LibC.SYS_munmap, (long)_c.Ctl, CtlSize);
            Errno.CheckRaw(r, "munmap control page", leader.ToString());
            foreach (var (tid, core) in p.Threads)
                SetFinalRegisters(_c.Tasks[tid], core);
            foreach (var (tid, core) in p.Threads)
                EnterRestartedSyscall(_c.Tasks[tid], core);
        }
        // A process dumped in a group stop gets the signal that stopped it (stop_signo, SIGSTOP in
        // images without one) while still held: it stops at its first step after the detach,
        // before running any code of its own, and waits for SIGCONT; waitid shows that signal.
        foreach (var p in _c.Procs)
            if (p.LeaderCore.Tc is { TaskState: TaskStates.Stopped } tc)
            {
                int sig = tc.HasStopSigno && tc.StopSigno is LibC.SIGTSTP or LibC.SIGTTIN or LibC.SIGTTOU ? (int)tc.StopSigno : LibC.SIGSTOP;
                Errno.Check(LibC.kill(p.Pid, sig), $"kill({sig})", $"process {p.Pid}, dumped stopped");
            }
        // Children first, so a parent that waits for them finds them running.
        for (int i = _c.Procs.Count - 1; i >= 0; i--)
            foreach (var (tid, _) in _c.Procs[i].Threads)
                _c.Tasks[tid].Detach();
    }

    /// <summary>
    /// A thread dumped inside a syscall the kernel restarts has image registers back on the
    /// syscall instruction with rax = the call. Detached there, a signal arriving before the thread
    /// runs again would have its handler run first and the call entered after: pause() after the
    /// handler set the flag the loop waits on never returns, where the kernel would have returned
    /// EINTR. So the thread is stepped into the call's entry while still held, and is inside it
    /// at the detach, as it was at dump time.
    /// </summary>
    private void EnterRestartedSyscall(RestoreTask t, CoreEntry core)
    {
        var g = core.ThreadInfo?.Gpregs;
        if (g == null || (long)g.OrigAx < 0 || g.Ax != g.OrigAx) return;
        Span<byte> insn = stackalloc byte[2];
        try { RemoteMemory.Read(t.Pid, g.Ip, insn); }
        catch (SyscallException) { return; }
        if (insn[0] != 0x0f || insn[1] != 0x05) return;
        if (!t.StepIntoSyscall()) Log.D($"{t}: a signal came before its restarted syscall {g.OrigAx}; delivered at the detach");
    }

    private void SetFinalRegisters(RestoreTask t, CoreEntry core)
    {
        var ti = core.ThreadInfo ?? throw new ImageException(_c.Dir.PathOf(ImageDir.CoreName(t.Tid)), "no thread_info");
        var g = ti.Gpregs;
        if (g.HasMode && g.Mode != UserX86RegsMode.Native)
            throw new CrispException($"{t}: 32-bit (compat) tasks are not supported");
        var r = Registers.FromImage(g);
        r.orig_rax = ulong.MaxValue; // images hold registers after the restart fix-up: no restart now
        t.SetRegs(r);
        if (ti.Fpregs != null)
        {
            var area = t.GetXState();
            Xsave.FromImage(ti.Fpregs, area);
            t.SetXState(area);
        }
        ulong mask = core.ThreadCore?.HasBlkSigset == true ? core.ThreadCore.BlkSigset : core.Tc?.BlkSigset ?? 0;
        t.SetSigMask(mask);
    }
}
