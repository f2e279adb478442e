using System.Buffers.Binary;
using Crisp.Native;

namespace Crisp.Checkpoint.Restore;

/// <summary>
/// Zombies: a child that had exited but was not reaped when the tree was dumped is cloned from its
/// restored parent like any other process (same pid, group and session), then made to exit the
/// way it did: exit_group(code), or killed by its signal (with PR_SET_DUMPABLE 0, so no core file
/// is written for it). Its parent can then waitpid() it and get the same status.
///
/// The zombie is traced by crisp, so its exit is reported to crisp first; when crisp collects it
/// the kernel drops the trace and hands the zombie to its real parent, with a SIGCHLD. That
/// SIGCHLD is not part of the dumped state (the parent saw its child die before the dump), so it
/// is taken back out of the parent's pending set; signals that really were pending at dump are
/// queued again later from the images.
/// </summary>
internal sealed unsafe partial class RestoreSession
{
    private const long SYS_rt_sigtimedwait = 128;

    private void ExitAsZombie(ZombieImage z)
    {
        var t = _c.Tasks[HostPid(z.Pid)];
        var parent = _c.Tasks[HostPid(z.Ppid)];
        int status = z.ExitStatus;
        int sig = status & 0x7f;
        var r = t.BaseRegs;
        r.rip = Code;
        r.orig_rax = ulong.MaxValue;
        if (sig == 0)
        {
            r.rax = LibC.SYS_exit_group;
            r.rdi = (ulong)((status >> 8) & 0xff);
        }
        else
        {
            t.Check(Code, "prctl(PR_SET_DUMPABLE, 0)", LibC.SYS_prctl, LibC.PR_SET_DUMPABLE, 0);
            t.SetSigMask(0);
            r.rax = LibC.SYS_kill;
            r.rdi = (ulong)OwnViewPid(z.Pid);
            r.rsi = (ulong)sig;
        }
        t.SetRegs(r);
        int deliver = 0;
        while (true)
        {
            RestoreTask.Req(LibC.PTRACE_CONT, t.Tid, 0, deliver, "PTRACE_CONT");
            int s = RestoreTask.Wait(t.Tid);
            if (!LibC.WIFSTOPPED(s))
            {
                t.Gone = true;
                int got = LibC.WIFEXITED(s) ? LibC.WEXITSTATUS(s) << 8 : LibC.WTERMSIG(s);
                if (got != (status & 0xff7f))
                    throw new CrispException($"zombie {z.Pid} {RestoreTask.Describe(s)}, dumped with wait status 0x{status:x}");
                break;
            }
            // The signal it must die of is delivered; anything else (the int3 after kill) is not.
            deliver = sig != 0 && LibC.WPTRACEEVENT(s) == 0 && LibC.WSTOPSIG(s) == sig ? sig : 0;
            if (deliver == 0 && LibC.WSTOPSIG(s) == LibC.SIGTRAP)
                throw new CrispException($"zombie {z.Pid} survived its exit (wait status 0x{status:x})");
        }
        _c.Tasks.Remove(t.Tid);
        if ((status & 0x80) != 0) Log.W($"zombie {z.Pid}: dumped as having dumped core; restored without the core flag");

        // Take back the SIGCHLD its exit just sent to the parent (every signal is blocked there).
        var scratch = new Scratch(this, parent.Pid);
        Span<byte> set = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(set, 1UL << (LibC.SIGCHLD - 1));
        ulong setAt = scratch.Put(set);
        ulong tsAt = scratch.Put(new byte[16]);
        long got2 = parent.Call(Code, SYS_rt_sigtimedwait, (long)setAt, 0, (long)tsAt, 8);
        if (got2 != LibC.SIGCHLD && got2 != -Errno.EAGAIN)
            Errno.CheckRaw(got2, "rt_sigtimedwait(SIGCHLD)", parent.ToString());
    }
}
