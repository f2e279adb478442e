using System.Diagnostics;
using Crisp.Native;

namespace Crisp.LazyPages;

/// <summary>
/// Reads a uffd's messages: events (FORK, REMAP, REMOVE, UNMAP) are applied to the bookkeeping at
/// once, faults are queued for the fault server. Every method here runs under the process's Gate
/// (the ordering rules in LazyPagesDaemon.cs say why).
/// </summary>
internal sealed unsafe class UffdEvents
{
    private const int PageSize = 4096;
    private readonly ServedProcesses _served;
    private readonly LazyPagesStats _stats;
    private readonly Logger _log;

    public UffdEvents(ServedProcesses served, LazyPagesStats stats, Logger log)
    {
        _served = served;
        _stats = stats;
        _log = log;
    }

    /// <summary>Reads one uffd message: events are applied now, faults queued. False when none is readable.</summary>
    public bool ReadOne(LazyProcess p)
    {
        if (p.Gone) return false;
        LibC.uffd_msg msg;
        nint n = LibC.read(p.Uffd, &msg, (nuint)sizeof(LibC.uffd_msg));
        if (n < 0)
        {
            int err = Errno.Last;
            if (err == Errno.EAGAIN || err == Errno.EINTR) return false;
            _served.Drop(p, $"reading its uffd failed: {Errno.Name(err)}");
            return false;
        }
        if (n == 0) { _served.Drop(p, "its uffd reached end of file"); return false; }
        if (n != sizeof(LibC.uffd_msg)) throw new InvalidOperationException($"short uffd message ({n} bytes) from {p.Name}");
        switch (msg.@event)
        {
            case LibC.UFFD_EVENT_PAGEFAULT:
                _stats.Fault();
                p.FaultQueue.Enqueue((msg.pf_address & ~(ulong)(PageSize - 1), Stopwatch.GetTimestamp()));
                break;
            case LibC.UFFD_EVENT_FORK: OnFork(p, (int)msg.fork_ufd); break;
            case LibC.UFFD_EVENT_REMAP: OnRemap(p, msg.remap_from, msg.remap_to, msg.remap_len); break;
            case LibC.UFFD_EVENT_REMOVE:
            case LibC.UFFD_EVENT_UNMAP: OnRemove(p, msg.remove_start, msg.remove_end); break;
            default: _log.W($"lazy-pages: {p.Name}: unknown uffd event 0x{msg.@event:x}"); break;
        }
        return true;
    }

    /// <summary>Reads pending events (queuing faults) after an EAGAIN; yields if none is readable yet.</summary>
    public void AfterEagain(LazyProcess p, ref int spins)
    {
        _stats.Eagain();
        bool any = false;
        while (ReadOne(p)) any = true;
        if (!any)
        {
            if (++spins > 1000) Thread.Sleep(1);
            else Thread.Yield();
        }
    }

    private void OnFork(LazyProcess parent, int childUffd)
    {
        SetNonBlocking(childUffd);
        LibC.fcntl(childUffd, LibC.F_SETFD, LibC.FD_CLOEXEC);
        var pending = parent.Pending.Clone();
        foreach (var c in parent.Claims) foreach (var r in c.Ranges) pending.Add(r);
        var child = new LazyProcess(childUffd, 0, parent.SourcePid, $"child of {parent.Name} (uffd {childUffd})", pending);
        _stats.Forked();
        _served.Publish(child);
    }

    private static void OnRemap(LazyProcess p, ulong from, ulong to, ulong len)
    {
        p.Pending.Remap(from, to, len);
        foreach (var c in p.Claims) c.Remap(from, to, len);
        for (int i = 0; i < p.Parked.Count; i++)
        {
            var (a, t) = p.Parked[i];
            if (a >= from && a < from + len) p.Parked[i] = (a - from + to, t);
        }
        p.LastWindowEnd = 0;
    }

    private static void OnRemove(LazyProcess p, ulong start, ulong end)
    {
        p.Pending.Remove(start, end);
        foreach (var c in p.Claims) c.Remove(start, end);
    }

    public static void SetNonBlocking(int fd)
    {
        int fl = LibC.fcntl(fd, LibC.F_GETFL, 0);
        if (fl >= 0) LibC.fcntl(fd, LibC.F_SETFL, fl | LibC.O_NONBLOCK);
    }
}
