using System.Diagnostics;
using System.Net.Sockets;
using Crisp.Images;
using Crisp.Native;

namespace Crisp.LazyPages;

/*
 * The lazy-pages daemon: answers the page faults of lazily restored processes and pushes the rest
 * of their memory in the background.
 *
 * Threads. One poll thread (the caller of Run) polls the listening socket, the hand-off
 * connections, every uffd and every pidfd, and answers faults. One prefetch worker copies what is
 * left in big chunks on its own page-source channel. They meet at LazyProcess.Gate. The worker
 * begins after restore-finished, except for a recorded working set (Prefetch/WorkingSet.cs),
 * which it pushes from each process's hand-off on, before the process resumes.
 *
 * Where things are: this file is the poll loop (its descriptors stay registered in a PollSet from
 * one turn to the next); HandOff/ the hand-off socket (the protocol itself is Crisp.Native's
 * LazyHandOff, shared with the restorer); Faults/ reading uffd events and answering faults;
 * Prefetch/ the background worker; Failures/ what happens when pages cannot be delivered.
 *
 * Ordering rules (why the lock covers both the uffd read and every fill ioctl):
 *  - The kernel raises ctx->mmap_changing before it queues a FORK/REMAP/REMOVE/UNMAP event and
 *    lowers it only after we have read the event; while it is raised every UFFDIO_COPY/ZEROPAGE
 *    fails with EAGAIN. Once we read the event the task goes on (madvise zaps, mremap moves).
 *    So an event must be applied to our bookkeeping before any other fill on that uffd can run,
 *    or a copy decided on stale state could land in a range the task just dropped (old data where
 *    it must read zeros). Hence: the uffd is read only under Gate, events are applied at once, and
 *    fills are issued under Gate after checking the current state.
 *  - EAGAIN: put the range back, read events (faults read meanwhile are queued), retry. EAGAIN can
 *    also be seen just before the event is queued or just after it is read (mmap_changing is not
 *    yet lowered): then nothing is readable and we yield and retry.
 *  - The prefetch worker reads the page source outside the lock, on a claim: its ranges leave
 *    Pending, events apply to the claim as well (moved, cut, dropped), and only what is left is
 *    copied. A fault on a claimed page is parked until the claim completes, never answered with
 *    zeros (that would make the later copy fail with EEXIST and lose the data).
 *  - EEXIST is success (someone filled it); a fault answered that way is woken explicitly, since
 *    the kernel wakes only on a successful fill.
 *  - A fault on a page not pending and not claimed gets UFFDIO_ZEROPAGE: not in the image, or
 *    dropped by REMOVE/UNMAP (what the task would read without uffd), or already filled (EEXIST).
 *  - FORK: the new uffd arrives in the message; the child gets a copy of Pending plus the claims
 *    (a claim's copy may or may not have reached the parent before fork: EEXIST sorts it out).
 *  - A process is gone when its pidfd fires or a fill says ESRCH/ENOSPC. uffd poll has no HUP for it.
 *  - If the page source fails for a process, what is left is poisoned (UFFDIO_POISON: SIGBUS on
 *    access, waiters woken), or the process is killed if that is refused. Never zeros, never a hang.
 *  - A dropped process leaves the process table at once, from either thread; its uffd and pidfd
 *    are closed by the poll thread after it has taken them out of the poll set (so a descriptor
 *    number is never polled after it was closed and perhaps reused).
 * Nothing waits forever: the page source must answer its first connection, and a restore must
 * hand over its first process, within PeerTimeout (from the start, or from the last hand-off
 * connection coming or going); after that the processes' lives govern (pidfd, ESRCH) and the
 * restorer's connection (its end means no more tasks). Cancellation (SIGTERM/SIGINT in the
 * command) poisons what is left and ends at once.
 * We exit when restore-finished has arrived and every process has nothing pending (or is gone);
 * closing a uffd unregisters its ranges, so later faults on dropped ranges behave as plain memory.
 */

/// <summary>The lazy-pages daemon engine (the <c>crisp lazy-pages</c> command runs one).</summary>
public sealed class LazyPagesDaemon : IDisposable
{
    private readonly LazyPagesOptions _options;
    private readonly Logger _log;
    public LazyPagesStats Stats { get; } = new();
    /// <summary>Failures reported (page source lost, processes poisoned or killed).</summary>
    public IReadOnlyList<string> Failures => _failures.Failures;

    private readonly ManualResetEventSlim _prefetchKick = new(false);
    private readonly WakePipe _wake = new();
    private readonly ServedProcesses _served;
    private readonly UffdEvents _events;
    private readonly FailurePolicy _failures;
    private readonly PageCopier _copier;
    private readonly HandOffListener _handOff;
    private readonly PollSet _poll = new();
    /// <summary>Processes whose uffd and pidfd are in the poll set, and the table they were taken from.</summary>
    private readonly HashSet<LazyProcess> _registered = new();
    private LazyProcess[]? _registeredFrom;
    private FaultServer? _faults;
    private Prefetcher? _prefetcher;
    private bool _restoreFinished, _noMoreTasksSeen;
    private int _handedOver, _connectionsSeen;
    /// <summary>When a hand-off connection last came or went (or Run started): the peer timeout counts from here.</summary>
    private long _lastHandOffEvent;

    /// <summary>
    /// No task can still arrive: restore-finished came, or every hand-off connection has closed
    /// after at least one task (the restorer is gone; serve what we have and finish).
    /// </summary>
    private bool NoMoreTasks => _restoreFinished || (_handedOver > 0 && _handOff.ConnectionCount == 0);

    public string SocketPath => _handOff.SocketPath;

    public LazyPagesDaemon(LazyPagesOptions options)
    {
        _options = options;
        _log = options.Log;
        _served = new ServedProcesses(Stats, _log, _prefetchKick, _wake);
        _events = new UffdEvents(_served, Stats, _log);
        _failures = new FailurePolicy(options.Policy, _served, _events, Stats, _log);
        _copier = new PageCopier(_served, _failures, Stats, _log);
        _handOff = new HandOffListener(options.WorkDir);
        if (!string.IsNullOrEmpty(options.PrefetchOrderPath)) LoadPrefetchOrder(options.PrefetchOrderPath);
        if (!string.IsNullOrEmpty(options.RecordOrderPath)) _recordTo = options.RecordOrderPath;
    }

    // ---------------------------------------------------------------- working-set prefetch (Prefetch/WorkingSet.cs)

    private Dictionary<int, List<(ulong Start, ulong End)>>? _workingSet;
    private string? _recordTo;
    private readonly List<LazyProcess> _recording = new();

    private void LoadPrefetchOrder(string path)
    {
        try
        {
            _workingSet = WorkingSet.Read(path);
            _log.I($"lazy-pages: pushing first the working set recorded in {path} ({_workingSet.Count} process(es))");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException)
        {
            // only an ordering hint: without it the pages still all come, in the ordinary order
            _log.W($"lazy-pages: ignoring the prefetch order {path}: {e.Message}");
        }
    }

    private void AttachWorkingSet(LazyProcess p)
    {
        if (_recordTo != null) { p.FaultOrder = new(); _recording.Add(p); }
        if (_workingSet != null && _workingSet.TryGetValue(p.SourcePid, out var ws))
        {
            p.WorkingSet = [.. ws]; // the image's addresses: where the pages are at hand-off
            _log.I($"lazy-pages: {p.Name}: {ws.Count} recorded range(s) to push first");
        }
    }

    private void SavePrefetchOrder()
    {
        if (_recordTo == null || _failures.Count > 0 || _recording.All(p => p.FaultOrder!.Count == 0)) return;
        try
        {
            WorkingSet.Write(_recordTo, _recording.Select(p => (p.SourcePid, (IReadOnlyList<(ulong, ulong)>)p.FaultOrder!)));
            _log.I($"lazy-pages: fault order recorded in {_recordTo}");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            _log.W($"lazy-pages: cannot record the fault order in {_recordTo}: {e.Message}");
        }
    }

    /// <summary>
    /// Listens, serves, and returns when everything is in: 0 if every page went in, 1 if some
    /// process had to be poisoned or killed (see <see cref="Failures"/>). Cancellation poisons
    /// what is left (the processes must not read zeros) and returns 1.
    /// </summary>
    public int Run(CancellationToken cancel = default)
    {
        // The page source first: "ready" (socket file, status fd) then means pages can flow.
        var first = OpenPageSource(cancel);
        if (first is null)
        {
            if (_options.StatusFd >= 0) LibC.close(_options.StatusFd); // whoever waits for "ready" sees the end
            Stats.Finish();
            return 1;
        }
        var shared = new SharedPageChannel(first);
        _faults = new FaultServer(_options.Policy, shared.Urgent, _events, _copier, _failures, _served, Stats, _log);
        _failures.AnswerWaiting = _faults.AnswerWaiting;
        _prefetcher = new Prefetcher(_options.Policy, _options.PageSource, shared, _served, _copier, _failures, _wake, _prefetchKick, Stats, _log);
        try
        {
            _handOff.Listen();
        }
        catch
        {
            // never ready: whoever waits for the status byte must see the end, not wait forever
            if (_options.StatusFd >= 0) LibC.close(_options.StatusFd);
            _faults.Dispose();
            _faults = null;
            throw;
        }
        _lastHandOffEvent = Stopwatch.GetTimestamp();
        StatusFd.Report(_options.StatusFd);
        _prefetcher.Start();
        try
        {
            PollLoop(cancel);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            _failures.Fail($"lazy-pages: daemon failure: {e.Message}");
            _failures.PoisonEverything($"daemon failure ({e.GetType().Name})");
        }
        finally
        {
            _prefetcher.StopAndJoin();
            Stats.Finish();
            SavePrefetchOrder();
            Shutdown();
        }
        return _failures.Count == 0 ? 0 : 1;
    }

    private bool WaitsForever => _options.PeerTimeout <= TimeSpan.Zero || _options.PeerTimeout == Timeout.InfiniteTimeSpan;
    private string PeerTimeoutText => $"{_options.PeerTimeout.TotalSeconds:0.###} s";

    /// <summary>The fault channel, tried again with backoff until the peer timeout; null (failure reported) if it never opens.</summary>
    private IPageChannel? OpenPageSource(CancellationToken cancel)
    {
        long start = Stopwatch.GetTimestamp();
        int delay = 50;
        for (int attempt = 0; ; attempt++)
        {
            try
            {
                return _options.PageSource.OpenChannel();
            }
            catch (PageSourceException e)
            {
                var left = _options.PeerTimeout - Stopwatch.GetElapsedTime(start);
                if (cancel.IsCancellationRequested)
                {
                    _failures.Fail($"lazy-pages: stopped while waiting for the page source: {e.Message}");
                    return null;
                }
                if (!WaitsForever && left <= TimeSpan.Zero)
                {
                    _failures.Fail($"lazy-pages: the page source could not be reached within {PeerTimeoutText}: {e.Message}");
                    return null;
                }
                if (attempt == 0) _log.I($"lazy-pages: waiting for the page source ({e.Message})");
                int wait = WaitsForever ? delay : (int)Math.Clamp(left.TotalMilliseconds, 1, delay);
                cancel.WaitHandle.WaitOne(wait);
                delay = Math.Min(delay * 2, 1000);
            }
        }
    }

    /// <summary>
    /// No process handed over yet and no hand-off connection has come or gone for the peer
    /// timeout: the failure to report, else null.
    /// </summary>
    private string? NobodyCame()
    {
        if (_handedOver > 0 || _restoreFinished || WaitsForever) return null;
        if (Stopwatch.GetElapsedTime(_lastHandOffEvent) < _options.PeerTimeout) return null;
        if (_handOff.ConnectionCount > 0)
            return $"lazy-pages: a restore connected to {SocketPath} but handed over no process within {PeerTimeoutText}; giving up";
        if (_connectionsSeen > 0)
            return $"lazy-pages: a restore connected to {SocketPath} and left without handing over a process (did it fail?); no other came within {PeerTimeoutText}; giving up";
        return $"lazy-pages: no restore connected to {SocketPath} within {PeerTimeoutText}; giving up";
    }

    // ---------------------------------------------------------------- the poll loop

    private void PollLoop(CancellationToken cancel)
    {
        _poll.Add(_handOff.ListenerFd, PollSlot.Listener, null);
        _poll.Add(_wake.ReadFd, PollSlot.Wake, null);
        while (true)
        {
            if (cancel.IsCancellationRequested)
            {
                _failures.Fail(_handedOver == 0
                    ? "lazy-pages: stopped before any restore handed over a process"
                    : "lazy-pages: cancelled before every page was delivered");
                _failures.PoisonEverything("daemon stopped");
                return;
            }
            if (_prefetcher!.Failure is { } pf)
            {
                _failures.Fail($"lazy-pages: prefetch worker failed: {pf.Message}");
                _failures.PoisonEverything("daemon failure (prefetch worker)");
                return;
            }
            if (NoMoreTasks)
            {
                if (!_noMoreTasksSeen) { _noMoreTasksSeen = true; _prefetcher.Release(); }
                if (_served.AllComplete()) return;
            }
            if (NobodyCame() is { } nobody)
            {
                _failures.Fail(nobody);
                return;
            }

            var procs = UpdateRegistrations();
            int timeout = procs.Any(p => p.Parked.Count > 0 || p.FaultQueue.Count > 0) ? 1 : 100;
            int ready = _poll.Wait(timeout);
            for (int i = 0, count = _poll.Count; ready > 0 && i < count; i++)
            {
                short rev = _poll.Events(i);
                if (rev == 0) continue;
                var (kind, owner) = _poll.Entry(i);
                switch (kind)
                {
                    case PollSlot.Listener:
                        foreach (var c in _handOff.AcceptAll())
                        {
                            _poll.Add((int)c.Handle, PollSlot.Connection, c);
                            _connectionsSeen++;
                            _lastHandOffEvent = Stopwatch.GetTimestamp();
                        }
                        break;
                    case PollSlot.Connection: ReadHandOff((Socket)owner!); break;
                    case PollSlot.Wake: _wake.Drain(); break;
                    case PollSlot.Uffd:
                        {
                            var p = (LazyProcess)owner!;
                            if ((rev & (LibC.POLLERR | LibC.POLLNVAL)) != 0) { lock (p.Gate) _served.Drop(p, "its uffd reported an error"); }
                            else lock (p.Gate) _faults!.Drain(p);
                            break;
                        }
                    case PollSlot.PidFd:
                        {
                            var p = (LazyProcess)owner!;
                            lock (p.Gate) _served.Drop(p, "exited");
                            break;
                        }
                }
            }
            // parked faults and queued faults are retried every turn (cheap: usually empty)
            foreach (var p in _served.All)
                if (p.Parked.Count > 0 || p.FaultQueue.Count > 0)
                    lock (p.Gate) _faults!.Retry(p);
        }
    }

    /// <summary>
    /// Brings the poll set up to date with the process table: new processes' uffd and pidfd in,
    /// dropped ones out and closed. Returns the table it looked at.
    /// </summary>
    private LazyProcess[] UpdateRegistrations()
    {
        var procs = _served.All;
        if (!ReferenceEquals(procs, _registeredFrom))
        {
            foreach (var p in procs)
                if (!p.Gone && _registered.Add(p))
                {
                    _poll.Add(p.Uffd, PollSlot.Uffd, p);
                    if (p.PidFd >= 0) _poll.Add(p.PidFd, PollSlot.PidFd, p);
                }
            _registeredFrom = procs;
        }
        // after the additions: a process dropped while it was being added is taken out here
        while (_served.TryTakeDropped(out var gone))
        {
            _poll.Remove(gone);
            _registered.Remove(gone);
            gone.CloseDescriptors();
        }
        return procs;
    }

    // ---------------------------------------------------------------- hand-off messages

    private void ReadHandOff(Socket c)
    {
        var m = _handOff.Read(c);
        switch (m.Kind)
        {
            case HandOffKind.Nothing:
            case HandOffKind.Zombie: // nothing to serve
                return;
            case HandOffKind.Closed:
                if (m.Problem is not null) _log.I($"lazy-pages: {m.Problem}");
                _poll.Remove(c);
                _handOff.Close(c);
                _lastHandOffEvent = Stopwatch.GetTimestamp();
                return;
            case HandOffKind.RestoreFinished:
                _restoreFinished = true;
                _prefetcher!.Release();
                return;
        }
        int pid = m.Pid;
        // The pid is the restorer's: it may mean another process in our namespace (HandOffPeer.cs).
        var local = HandOffPeer.Resolve(pid, _handOff.PeerOf(c));
        if (local.Note is not null) _log.I($"lazy-pages: {local.Note}");
        if (m.Uffd < 0)
        {
            _failures.Fail($"lazy-pages: pid {pid}: {m.Problem}");
            _failures.Kill(local.Pid, local.PidFd, $"pid {pid}", "its uffd was not received");
            if (local.PidFd >= 0) LibC.close(local.PidFd);
            return;
        }
        // A process in a pid namespace below the restorer's is named by its pid here; its plan by its pid there.
        AddProcess(local.DumpedPid > 0 ? local.DumpedPid : pid, m.Uffd, local);
    }

    private void AddProcess(int pid, int uffd, LocalProcess local)
    {
        LazyPlan plan;
        try { plan = _options.PlanFor(pid); }
        catch (Exception e)
        {
            // without a plan we cannot tell data from zeros: the process must not run on
            _failures.Fail($"lazy-pages: pid {pid}: cannot read its memory plan: {e.Message}");
            _failures.Kill(local.Pid, local.PidFd, $"pid {pid}", "no memory plan");
            if (local.PidFd >= 0) LibC.close(local.PidFd);
            LibC.close(uffd);
            return;
        }
        _handedOver++;
        UffdEvents.SetNonBlocking(uffd);
        var p = new LazyProcess(uffd, local.Pid, plan.ImagePid, $"pid {pid}", plan.ToPending());
        p.PidFd = local.PidFd;
        AttachWorkingSet(p);
        _log.I($"lazy-pages: {p.Name}: {p.Pending.Pages} pages to deliver ({plan})");
        _served.Publish(p);
    }

    // ---------------------------------------------------------------- teardown

    private void Shutdown()
    {
        foreach (var p in _served.All)
            lock (p.Gate)
                p.Gone = true;
        foreach (var p in _served.All) p.CloseDescriptors();
        foreach (var p in _registered) p.CloseDescriptors();
        while (_served.TryTakeDropped(out var gone)) gone.CloseDescriptors();
        _registered.Clear();
        _handOff.Dispose();
        _wake.Dispose();
        _faults?.Dispose();
        _faults = null;
    }

    public void Dispose()
    {
        _wake.Dispose();
        _prefetchKick.Dispose();
    }
}
