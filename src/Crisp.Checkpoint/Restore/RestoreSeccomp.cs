using System.Buffers.Binary;
using Crisp.Images.Proto;
using Crisp.Native;

namespace Crisp.Checkpoint.Restore;

/// <summary>
/// Seccomp, per thread, just before the credentials (installing a filter without no_new_privs
/// needs CAP_SYS_ADMIN, which the dumped creds may lack; CRIU orders it the same). From here on
/// crisp still injects syscalls (creds, signals, the control page's munmap): the thread is set
/// PTRACE_O_SUSPEND_SECCOMP first, so its filter or strict mode only takes effect at the detach.
/// A filter chain is installed oldest first, walking seccomp.img's <c>prev</c> links from the
/// index in the thread core (SeccompDump.cs); a chain dumped with SECCOMP_FILTER_FLAG_TSYNC
/// is installed on the leader and reaches the other threads from there.
/// </summary>
internal sealed unsafe partial class RestoreSession
{
    private const int SYS_seccomp = 317;
    private const int SECCOMP_SET_MODE_FILTER = 1;

    private void RestoreSeccomp(ProcessImage p)
    {
        // The leader first: a TSYNC chain on it gives the other threads theirs.
        foreach (var (tid, core) in p.Threads.OrderBy(t => t.Tid == p.Pid ? 0 : 1))
        {
            var tc = core.ThreadCore;
            if (tc == null || !tc.HasSeccompMode || tc.SeccompMode == SeccompMode.Disabled) continue;
            var t = _c.Tasks[tid];
            RestoreTask.Req(LibC.PTRACE_SETOPTIONS, t.Tid, 0, StubPtraceOptions | LibC.PTRACE_O_SUSPEND_SECCOMP, "PTRACE_SETOPTIONS(SUSPEND_SECCOMP)");
            if ((int)tc.SeccompMode == LibC.SECCOMP_MODE_STRICT)
            {
                t.Check(Code, "prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT)", LibC.SYS_prctl, LibC.PR_SET_SECCOMP, LibC.SECCOMP_MODE_STRICT);
                continue;
            }
            if ((int)tc.SeccompMode != LibC.SECCOMP_MODE_FILTER)
                throw new CrispException($"thread {tid}: unknown seccomp mode {(int)tc.SeccompMode} in its core image");
            foreach (var (f, i) in Chain(tid, tc.SeccompFilter))
            {
                var scratch = new Scratch(this, t.Pid);
                ulong insns = scratch.Put(f.Filter.Span);
                var prog = new byte[16]; // struct sock_fprog { u16 len; u64 filter; }
                BinaryPrimitives.WriteUInt16LittleEndian(prog, (ushort)(f.Filter.Length / 8));
                BinaryPrimitives.WriteUInt64LittleEndian(prog.AsSpan(8), insns);
                t.Check(Code, $"seccomp(SECCOMP_SET_MODE_FILTER, 0x{f.Flags:x}) filter {i}", SYS_seccomp, SECCOMP_SET_MODE_FILTER, f.Flags, (long)scratch.Put(prog));
            }
        }
    }

    /// <summary>The chain starting at <paramref name="first"/> (the oldest filter), bounds checked.</summary>
    private List<(SeccompFilter Filter, uint Index)> Chain(int tid, uint first)
    {
        _c.Seccomp ??= _c.Dir.Exists(Crisp.Images.ImageDir.SeccompName) ? _c.Dir.ReadSeccomp()
            : throw new CrispException($"thread {tid} is in seccomp filter mode but the images have no seccomp.img");
        var chain = new List<(SeccompFilter, uint)>();
        uint? at = first;
        while (at is uint i)
        {
            if (i >= _c.Seccomp.SeccompFilters.Count || chain.Count > _c.Seccomp.SeccompFilters.Count)
                throw new CrispException($"seccomp.img is corrupt: thread {tid}'s filter chain reaches index {i} of {_c.Seccomp.SeccompFilters.Count}");
            var f = _c.Seccomp.SeccompFilters[(int)i];
            if (f.Filter.Length == 0 || f.Filter.Length % 8 != 0 || f.Filter.Length / 8 > 4096)
                throw new CrispException($"seccomp.img is corrupt: filter {i} is {f.Filter.Length} bytes");
            chain.Add((f, i));
            at = f.HasPrev ? f.Prev : null;
        }
        return chain;
    }
}
