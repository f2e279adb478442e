using System.Runtime.InteropServices;
using Crisp.Images.Proto;
using Crisp.Inject;
using Crisp.Native;
using Crisp.Native.ProcFs;
using Google.Protobuf;

namespace Crisp.Checkpoint.Dump;

/// <summary>
/// Seccomp state of every thread, in CRIU's shape: the thread core carries the mode and, in
/// filter mode, the index of its oldest filter in seccomp.img; each filter's <c>prev</c> names
/// the one installed after it (the newest has none): restore installs along that walk. Filters are read with
/// PTRACE_SECCOMP_GET_FILTER (index 0 is the oldest) and their flags with
/// PTRACE_SECCOMP_GET_METADATA (SECCOMP_FILTER_FLAG_LOG is all it reports).
///
/// The kernel cannot tell whether two threads share one filter or hold equal copies. As CRIU
/// does, when every thread of a process has the same chain it is written once, on the leader,
/// with SECCOMP_FILTER_FLAG_TSYNC, and the other threads get it from that at restore: so a later
/// TSYNC of the program still finds its threads on one chain.
/// </summary>
internal sealed unsafe class SeccompDump
{
    private const ulong SECCOMP_FILTER_FLAG_TSYNC = 1, SECCOMP_FILTER_FLAG_NEW_LISTENER = 8;
    private const int BPF_MAXINSNS = 4096, SockFilterSize = 8;

    [StructLayout(LayoutKind.Sequential)]
    private struct SeccompMetadata { public ulong filter_off, flags; }

    public SeccompEntry Entry { get; } = new();

    /// <summary>Reads the mode and filters of every thread of <paramref name="proc"/> into its cores.</summary>
    public void Collect(SeizedProcess proc, Dictionary<int, CoreEntry> cores)
    {
        var chains = new List<(SeizedTask Task, int Mode, List<SeccompFilter> Chain)>();
        foreach (var task in proc.Tasks)
        {
            int mode = Proc.TaskStatus(proc.Pid, task.Tid).Seccomp;
            if (mode == 0) continue;
            if (!task.SeccompSuspended)
                throw new CrispException($"thread {task.Tid} of {proc.Pid} entered seccomp mode {mode} while crisp seized it; dump again");
            // ptrace requests only work from the thread that seized the task.
            chains.Add((task, mode, mode == LibC.SECCOMP_MODE_FILTER ? task.Thread.Invoke(() => ReadChain(proc.Pid, task.Tid)) : []));
        }
        if (chains.Count == 0) return;

        // CRIU's TSYNC rule: every thread in filter mode with one equal chain → the leader's, with TSYNC.
        bool tsync = chains.Count == proc.Tasks.Count && chains.All(c => c.Mode == LibC.SECCOMP_MODE_FILTER)
                     && chains.All(c => SameChain(c.Chain, chains[0].Chain)) && proc.Tasks.Count > 1;
        foreach (var (task, mode, chain) in chains)
        {
            var tc = cores[task.Tid].ThreadCore;
            if (tsync && task.Tid != proc.Pid) continue;
            tc.SeccompMode = (SeccompMode)mode;
            if (mode != LibC.SECCOMP_MODE_FILTER) continue;
            // Newest first: each older filter's prev is the index of the newer one written before it.
            int first = Entry.SeccompFilters.Count;
            for (int i = chain.Count - 1; i >= 0; i--)
            {
                var f = chain[i].Clone();
                if (tsync) f.Flags |= (uint)SECCOMP_FILTER_FLAG_TSYNC;
                if (Entry.SeccompFilters.Count > first) f.Prev = (uint)(Entry.SeccompFilters.Count - 1);
                Entry.SeccompFilters.Add(f);
            }
            tc.SeccompFilter = (uint)(Entry.SeccompFilters.Count - 1);
        }
    }

    /// <summary>The thread's filters, oldest first.</summary>
    private static List<SeccompFilter> ReadChain(int pid, int tid)
    {
        var chain = new List<SeccompFilter>();
        var buf = new byte[BPF_MAXINSNS * SockFilterSize];
        fixed (byte* b = buf)
            for (int i = 0; ; i++)
            {
                long n = LibC.ptrace(LibC.PTRACE_SECCOMP_GET_FILTER, tid, i, (nint)b);
                if (n < 0)
                {
                    if (Errno.Last == Errno.ENOENT) break;
                    throw Errno.Failure("ptrace", $"PTRACE_SECCOMP_GET_FILTER, {tid}, filter {i}");
                }
                var meta = new SeccompMetadata { filter_off = (ulong)i };
                PtraceCalls.Request(LibC.PTRACE_SECCOMP_GET_METADATA, tid, sizeof(SeccompMetadata), (nint)(&meta),
                    $"PTRACE_SECCOMP_GET_METADATA filter {i}");
                if ((meta.flags & SECCOMP_FILTER_FLAG_NEW_LISTENER) != 0)
                    throw new CrispException($"thread {tid} of {pid}: seccomp filter {i} has a user-space notifier (SECCOMP_FILTER_FLAG_NEW_LISTENER): not supported yet");
                chain.Add(new SeccompFilter { Filter = ByteString.CopyFrom(buf, 0, (int)n * SockFilterSize), Flags = (uint)meta.flags });
            }
        return chain;
    }

    private static bool SameChain(List<SeccompFilter> a, List<SeccompFilter> b) =>
        a.Count == b.Count && a.Zip(b).All(p => p.First.Filter.Equals(p.Second.Filter) && p.First.Flags == p.Second.Flags);
}
