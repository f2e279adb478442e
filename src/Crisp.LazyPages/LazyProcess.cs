namespace Crisp.LazyPages;

/// <summary>
/// One userfaultfd the daemon serves: a restored task, or a child it forked (UFFD_EVENT_FORK).
/// Everything mutable here is guarded by <see cref="Gate"/>; the uffd is read and every
/// UFFDIO_COPY/ZEROPAGE/POISON on it is issued only while holding it (see the ordering notes in
/// <see cref="LazyPagesDaemon"/>).
/// </summary>
internal sealed class LazyProcess
{
    public readonly object Gate = new();
    public readonly int Uffd;
    /// <summary>The live pid if known (handshake), 0 for a forked child we never learnt the pid of.</summary>
    public readonly int Pid;
    /// <summary>The pid the page source knows the memory by (a forked child reads its parent's pages).</summary>
    public readonly int SourcePid;
    public readonly string Name;
    public int PidFd = -1;

    /// <summary>Pages with data still to be put in (run-time address → image address).</summary>
    public PageRangeSet Pending;
    /// <summary>Ranges taken by the prefetch worker and not yet copied. Events apply to them too.</summary>
    public readonly List<PageRangeSet> Claims = new();
    /// <summary>Faults on pages inside a claim: answered when the claim completes.</summary>
    public readonly List<(ulong Address, long Ticks)> Parked = new();
    /// <summary>Faults read while handling something else (EAGAIN), served next.</summary>
    public readonly Queue<(ulong Address, long Ticks)> FaultQueue = new();

    public bool Gone, Failed;
    public string? GoneReason;

    // fault-around state: a fault at exactly LastWindowEnd means sequential access
    public ulong LastWindowEnd;
    public long LastWindowPages;
    /// <summary>Where the prefetch worker continues: right after the last fault window.</summary>
    public ulong PrefetchHint;

    /// <summary>Recording the fault order (working-set prefetch, Prefetch/WorkingSet.cs): image ranges in first-touch order; null: not recorded.</summary>
    public List<(ulong Start, ulong End)>? FaultOrder;
    /// <summary>A recorded working set to push first (run-time addresses, which are the image's at hand-off), and how far the push got.</summary>
    public List<(ulong Start, ulong End)>? WorkingSet;
    public int WorkingSetAt;
    /// <summary>Whether some of the recorded working set is still to be claimed (read without Gate by the prefetch worker's pick).</summary>
    public bool HasWorkingSetLeft => WorkingSet is { } ws && WorkingSetAt < ws.Count;

    public LazyProcess(int uffd, int pid, int sourcePid, string name, PageRangeSet pending)
    {
        Uffd = uffd;
        Pid = pid;
        SourcePid = sourcePid;
        Name = name;
        Pending = pending;
    }

    public bool IsClaimed(ulong address)
    {
        foreach (var c in Claims) if (c.TryFind(address, out _)) return true;
        return false;
    }

    /// <summary>Nothing left to deliver and nobody waiting.</summary>
    public bool Complete => Gone || (Pending.IsEmpty && Claims.Count == 0 && Parked.Count == 0 && FaultQueue.Count == 0);

    private int _closed;

    /// <summary>Closes the uffd (unregistering what is left of its ranges) and the pidfd, once; any thread.</summary>
    public void CloseDescriptors()
    {
        if (Interlocked.Exchange(ref _closed, 1) != 0) return;
        Crisp.Native.LibC.close(Uffd);
        if (PidFd >= 0) Crisp.Native.LibC.close(PidFd);
        PidFd = -1;
    }

    public override string ToString() => Name;
}
