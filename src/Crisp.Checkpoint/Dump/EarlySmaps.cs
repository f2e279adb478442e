using System.Diagnostics;
using Crisp.Images;
using Crisp.Images.Proto;
using Crisp.Inject;
using Crisp.Native;
using Crisp.Native.ProcFs;

namespace Crisp.Checkpoint.Dump;

/// <summary>
/// smaps read before the freeze, for a lazy dump. Used for a process only when its maps, read
/// while frozen, show the very same VMAs. What that cannot see is a madvise or mlock that
/// covered whole VMAs exactly between the two reads (VmFlags change, bounds do not): so after
/// the pages are served, while the tree is still frozen, smaps is read again and any VMA whose
/// flags differ is reported.
/// </summary>
internal sealed class EarlySmaps
{
    private readonly int _pid;
    private readonly List<Vma> _smaps;
    private bool _used;

    private EarlySmaps(int pid, List<Vma> smaps)
    {
        _pid = pid;
        _smaps = smaps;
    }

    public static EarlySmaps? Read(int pid)
    {
        try { return new EarlySmaps(pid, Proc.Smaps(pid)); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or SyscallException) { return null; }
    }

    /// <summary>The early smaps of <paramref name="pid"/> if its layout has not changed since; null otherwise.</summary>
    public List<Vma>? Take(int pid)
    {
        if (pid != _pid) return null;
        if (!MemoryDump.SameLayout(_smaps, Proc.Maps(pid)))
        {
            Log.D($"process {pid}: layout changed before the freeze; smaps read again");
            return null;
        }
        _used = true;
        return _smaps;
    }

    /// <summary>Still frozen: re-reads smaps and warns about VMAs whose flags changed in the window.</summary>
    public void Verify()
    {
        if (!_used) return;
        List<Vma> now;
        try { now = Proc.Smaps(_pid); }
        catch (Exception e) when (e is IOException or SyscallException) { return; }
        // Killed meanwhile by someone else (a SIGKILL ends even a ptrace-stopped task): an exiting
        // process shows no mappings, which is not a layout change crisp missed.
        if (now.Count == 0 && _smaps.Count > 0)
        {
            Log.D($"process {_pid}: gone (killed?) while its pages were served; smaps not compared");
            return;
        }
        if (!MemoryDump.SameLayout(_smaps, now))
        {
            Log.W($"process {_pid}: its memory layout changed while frozen (internal error?)");
            return;
        }
        for (int i = 0; i < now.Count; i++)
            if (now[i].Flags != _smaps[i].Flags)
                Log.W($"process {_pid}: VMA {now[i]} changed its flags ({_smaps[i].Flags} -> {now[i].Flags}) just before the freeze; " +
                      "the restored process has the earlier ones");
    }
}
