using System.Diagnostics;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using Crisp.Images;
using Crisp.Native;

namespace Crisp.LazyPages;

/*
 * The lazy-pages daemon: answers the page faults of lazily restored processes and pushes the rest
 * of their memory in the background.
 *
 * Threads. One fault thread (the caller of Run) polls the listening socket, the hand-off
 * connections, every uffd and every pidfd, and answers faults. One prefetch worker copies what is
 * left in big chunks on its own page-source channel. They meet at LazyProcess.Gate.
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
 * We exit when restore-finished has arrived and every process has nothing pending (or is gone);
 * closing a uffd unregisters its ranges, so later faults on dropped ranges behave as plain memory.
 */

/// <summary>The lazy-pages daemon engine (the <c>crisp lazy-pages</c> command runs one).</summary>
public sealed unsafe class LazyPagesDaemon : IDisposable
{
    public const string SocketName = "lazy-pages.socket";
    /// <summary>"ReSTore Finished": sent after the last task has been handed over.</summary>
    public const uint RestoreFinished = 0x52535446;
    private const int PageSize = 4096;

    private readonly LazyPagesOptions _options;
    private readonly LazyPagesPolicy _policy;
    private readonly Action<string> _log;
    public LazyPagesStats Stats { get; } = new();
    /// <summary>Failures reported (page source lost, processes poisoned or killed).</summary>
    public IReadOnlyList<string> Failures => _failures;
    private readonly List<string> _failures = new();

    private volatile LazyProcess[] _procs = Array.Empty<LazyProcess>();
    private readonly object _procsLock = new();
    private volatile bool _restoreFinished, _stopping;
    private volatile int _handedOver;
    private volatile bool _noMoreTasksSeen;
    private volatile Exception? _prefetchFailure;

    /// <summary>
    /// No task can still arrive: restore-finished came, or every hand-off connection has closed
    /// after at least one task (the restorer is gone; serve what we have and finish).
    /// </summary>
    private bool NoMoreTasks => _restoreFinished || (_handedOver > 0 && _connections.Count == 0);
    private readonly ManualResetEventSlim _prefetchKick = new(false);
    private int _wakeRead = -1, _wakeWrite = -1;
    private Socket? _listener;
    private readonly List<Socket> _connections = new();
    /// <summary>The restorer behind each hand-off connection (HandOffPeer.cs).</summary>
    private readonly Dictionary<Socket, Restorer> _peers = new();
    private IPageChannel? _faultChannel;
    private byte* _faultBuf;
    private readonly nuint _faultBufSize;

    public string SocketPath => Path.Combine(_options.WorkDir, SocketName);

    public LazyPagesDaemon(LazyPagesOptions options)
    {
        _options = options;
        _policy = options.Policy;
        _log = options.Log;
        _faultBufSize = (nuint)(Math.Max(_policy.SequentialMaxPages, _policy.FaultAroundPages) * PageSize);
    }

    /// <summary>
    /// Listens, serves, and returns when everything is in: 0 if every page went in, 1 if some
    /// process had to be poisoned or killed (see <see cref="Failures"/>). Cancellation poisons
    /// what is left (the processes must not read zeros) and returns 1.
    /// </summary>
    public int Run(CancellationToken cancel = default)
    {
        // The page source first: "ready" (socket file, status fd) then means pages can flow.
        _faultChannel = _options.PageSource.OpenChannel();
        _faultBuf = (byte*)NativeMemory.AlignedAlloc(_faultBufSize, PageSize);
        Listen();
        var prefetch = new Thread(PrefetchLoop) { IsBackground = true, Name = "lazy-pages prefetch" };
        prefetch.Start();
        try
        {
            FaultLoop(cancel);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            Fail($"lazy-pages: daemon failure: {e.Message}");
            PoisonEverything($"daemon failure ({e.GetType().Name})");
        }
        finally
        {
            _stopping = true;
            _prefetchKick.Set();
            prefetch.Join();
            Stats.Finish();
            Shutdown();
        }
        return _failures.Count == 0 ? 0 : 1;
    }

    // ---------------------------------------------------------------- hand-off socket

    private void Listen()
    {
        Directory.CreateDirectory(_options.WorkDir);
        string path = SocketPath;
        // Bound and listening under a temporary name, then renamed: whoever sees the socket
        // file can connect to it (no window where it exists but refuses connections).
        string temp = path + $".{Environment.ProcessId}.tmp";
        File.Delete(temp);
        _listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        _listener.Bind(new UnixDomainSocketEndPoint(temp));
        _listener.Listen(16);
        File.Move(temp, path, overwrite: true);
        _listener.Blocking = false;
        int* fds = stackalloc int[2];
        Errno.Check(LibC.pipe2(fds, LibC.O_CLOEXEC | LibC.O_NONBLOCK), "pipe2", "lazy-pages wake pipe");
        _wakeRead = fds[0];
        _wakeWrite = fds[1];
        if (_options.StatusFd >= 0)
        {
            byte zero = 0;
            Errno.Check(LibC.write(_options.StatusFd, &zero, 1), "write", $"status fd {_options.StatusFd}");
            LibC.close(_options.StatusFd);
        }
    }

    private void Accept()
    {
        while (true)
        {
            Socket c;
            try { c = _listener!.Accept(); }
            catch (SocketException e) when (e.SocketErrorCode == SocketError.WouldBlock) { return; }
            c.Blocking = true;
            _connections.Add(c);
            _peers[c] = HandOffPeer.Peer(c);
        }
    }

    /// <summary>
    /// One hand-off message: a 32-bit pid, then the uffd (SCM_RIGHTS; CRIU sends it in a second
    /// message with a one-byte payload, we also take it attached to the pid), or the 32-bit
    /// restore-finished word. A negative pid is a zombie (nothing to serve).
    /// </summary>
    private void ReadHandOff(Socket c)
    {
        int sock = (int)c.Handle;
        byte* word = stackalloc byte[4];
        int got = 0, fd = -1;
        while (got < 4)
        {
            int n = Receive(sock, word + got, 4 - got, ref fd, wait: got > 0);
            if (n == -2) return; // nothing there yet (spurious wake-up)
            if (n <= 0)
            {
                if (got != 0 || n < 0) _log("lazy-pages: hand-off connection closed in the middle of a message");
                if (fd >= 0) LibC.close(fd);
                _connections.Remove(c);
                _peers.Remove(c);
                c.Dispose();
                return;
            }
            got += n;
        }
        uint value = *(uint*)word;
        if (value == RestoreFinished)
        {
            if (fd >= 0) LibC.close(fd);
            _restoreFinished = true;
            _prefetchKick.Set();
            return;
        }
        int pid = (int)value;
        if (pid <= 0)
        {
            if (fd >= 0) LibC.close(fd);
            return; // zombie: CRIU sends -pid and no uffd
        }
        // The pid is the restorer's: it may mean another process in our namespace (HandOffPeer.cs).
        var local = HandOffPeer.Resolve(pid, _peers.GetValueOrDefault(c));
        if (local.Note is not null) _log($"lazy-pages: {local.Note}");
        if (fd < 0)
        {
            byte dummy;
            int n = Receive(sock, &dummy, 1, ref fd, wait: true);
            if (n <= 0 || fd < 0)
            {
                Fail($"lazy-pages: pid {pid}: no uffd came after the pid");
                KillPid(local.Pid, local.PidFd, $"pid {pid}", "its uffd was not received");
                if (local.PidFd >= 0) LibC.close(local.PidFd);
                return;
            }
        }
        AddProcess(local.DumpedPid > 0 ? local.DumpedPid : pid, fd, local);
    }

    /// <summary>
    /// recvmsg on a hand-off connection (the fd may be non-blocking: .NET keeps sockets so).
    /// Returns bytes, 0 at EOF, -1 on error or after waiting 5 s, -2 when nothing is there and
    /// <paramref name="wait"/> is false. A received descriptor lands in <paramref name="fd"/>.
    /// </summary>
    private int Receive(int sock, byte* buf, int len, ref int fd, bool wait)
    {
        byte* control = stackalloc byte[24];
        for (int attempt = 0; ; attempt++)
        {
            new Span<byte>(control, 24).Clear();
            var iov = new LibC.iovec((nint)buf, (nuint)len);
            var msg = new LibC.msghdr { msg_iov = &iov, msg_iovlen = 1, msg_control = control, msg_controllen = 24 };
            nint n = LibC.recvmsg(sock, &msg, LibC.MSG_CMSG_CLOEXEC);
            if (n >= 0)
            {
                var cmsg = (LibC.cmsghdr*)control;
                if (msg.msg_controllen >= 20 && cmsg->cmsg_level == LibC.SOL_SOCKET && cmsg->cmsg_type == LibC.SCM_RIGHTS)
                {
                    if (fd >= 0) LibC.close(fd);
                    fd = *(int*)(control + 16);
                }
                return (int)n;
            }
            int err = Errno.Last;
            if (err == Errno.EINTR) continue;
            if (err != Errno.EAGAIN)
            {
                _log($"lazy-pages: hand-off connection: recvmsg: {Errno.Name(err)}");
                return -1;
            }
            if (!wait) return -2;
            if (attempt > 0) { _log("lazy-pages: hand-off connection: message incomplete after 5 s"); return -1; }
            var pfd = new LibC.PollFd { fd = sock, events = LibC.POLLIN };
            LibC.poll(&pfd, 1, 5000);
        }
    }

    private void AddProcess(int pid, int uffd, LocalProcess local)
    {
        LazyPlan plan;
        try { plan = _options.PlanFor(pid); }
        catch (Exception e)
        {
            // without a plan we cannot tell data from zeros: the process must not run on
            Fail($"lazy-pages: pid {pid}: cannot read its memory plan: {e.Message}");
            KillPid(local.Pid, local.PidFd, $"pid {pid}", "no memory plan");
            if (local.PidFd >= 0) LibC.close(local.PidFd);
            LibC.close(uffd);
            return;
        }
        _handedOver++;
        SetNonBlocking(uffd);
        var p = new LazyProcess(uffd, local.Pid, plan.ImagePid, $"pid {pid}", plan.ToPending());
        p.PidFd = local.PidFd;
        _log($"lazy-pages: {p.Name}: {p.Pending.Pages} pages to deliver ({plan})");
        Publish(p);
    }

    private void Publish(LazyProcess p)
    {
        Stats.ProcessAdded();
        lock (_procsLock) _procs = [.. _procs, p];
        _prefetchKick.Set();
    }

    private void Unpublish(LazyProcess p)
    {
        lock (_procsLock) _procs = _procs.Where(x => x != p).ToArray();
    }

    private static void SetNonBlocking(int fd)
    {
        int fl = LibC.fcntl(fd, LibC.F_GETFL, 0);
        if (fl >= 0) LibC.fcntl(fd, LibC.F_SETFL, fl | LibC.O_NONBLOCK);
    }

    // ---------------------------------------------------------------- fault loop

    private enum Slot { Listener, Connection, Wake, Uffd, PidFd }

    private void FaultLoop(CancellationToken cancel)
    {
        var pfds = new List<LibC.PollFd>();
        var owners = new List<(Slot Kind, object? Owner)>();
        while (true)
        {
            if (cancel.IsCancellationRequested)
            {
                Fail("lazy-pages: cancelled before every page was delivered");
                PoisonEverything("daemon stopped");
                return;
            }
            if (_prefetchFailure is { } pf)
            {
                Fail($"lazy-pages: prefetch worker failed: {pf.Message}");
                PoisonEverything("daemon failure (prefetch worker)");
                return;
            }
            if (NoMoreTasks)
            {
                if (!_noMoreTasksSeen) { _noMoreTasksSeen = true; _prefetchKick.Set(); }
                if (AllComplete()) return;
            }

            pfds.Clear();
            owners.Clear();
            void Add(int fd, Slot kind, object? owner)
            {
                pfds.Add(new LibC.PollFd { fd = fd, events = LibC.POLLIN });
                owners.Add((kind, owner));
            }
            Add((int)_listener!.Handle, Slot.Listener, null);
            foreach (var c in _connections) Add((int)c.Handle, Slot.Connection, c);
            Add(_wakeRead, Slot.Wake, null);
            var procs = _procs;
            foreach (var p in procs)
            {
                Add(p.Uffd, Slot.Uffd, p);
                if (p.PidFd >= 0) Add(p.PidFd, Slot.PidFd, p);
            }
            int timeout = procs.Any(p => p.Parked.Count > 0 || p.FaultQueue.Count > 0) ? 1 : 100;
            var arr = CollectionsMarshal.AsSpan(pfds);
            int n;
            fixed (LibC.PollFd* pp = arr) n = LibC.poll(pp, (nuint)arr.Length, timeout);
            if (n < 0)
            {
                if (Errno.Last == Errno.EINTR) continue;
                Errno.Check(n, "poll", "lazy-pages fds");
            }
            for (int i = 0; i < arr.Length; i++)
            {
                short rev = arr[i].revents;
                if (rev == 0) continue;
                var (kind, owner) = owners[i];
                switch (kind)
                {
                    case Slot.Listener: Accept(); break;
                    case Slot.Connection: ReadHandOff((Socket)owner!); break;
                    case Slot.Wake: DrainWakePipe(); break;
                    case Slot.Uffd:
                        {
                            var p = (LazyProcess)owner!;
                            if ((rev & (LibC.POLLERR | LibC.POLLNVAL)) != 0) { lock (p.Gate) Drop(p, "its uffd reported an error"); }
                            else lock (p.Gate) Drain(p);
                            break;
                        }
                    case Slot.PidFd:
                        {
                            var p = (LazyProcess)owner!;
                            lock (p.Gate) Drop(p, "exited");
                            break;
                        }
                }
            }
            // parked faults and queued faults are retried every turn (cheap: usually empty)
            foreach (var p in _procs)
                if (p.Parked.Count > 0 || p.FaultQueue.Count > 0)
                    lock (p.Gate) { ServeQueued(p); ReprocessParked(p); }
        }
    }

    private bool AllComplete()
    {
        foreach (var p in _procs)
            lock (p.Gate) if (!p.Complete) return false;
        return true;
    }

    private void DrainWakePipe()
    {
        byte* b = stackalloc byte[64];
        while (LibC.read(_wakeRead, b, 64) > 0) { }
    }

    private void WakeFaultLoop()
    {
        byte one = 1;
        LibC.write(_wakeWrite, &one, 1);
    }

    /// <summary>Reads and handles every message on the uffd. Caller holds Gate.</summary>
    private void Drain(LazyProcess p)
    {
        while (!p.Gone && ReadOne(p)) ServeQueued(p);
        ServeQueued(p);
    }

    private void ServeQueued(LazyProcess p)
    {
        while (!p.Gone && p.FaultQueue.Count > 0)
        {
            var (addr, ticks) = p.FaultQueue.Dequeue();
            ServeFault(p, addr, ticks);
        }
    }

    /// <summary>Reads one uffd message: events are applied now, faults queued. False when none is readable.</summary>
    private bool ReadOne(LazyProcess p)
    {
        if (p.Gone) return false;
        LibC.uffd_msg msg;
        nint n = LibC.read(p.Uffd, &msg, (nuint)sizeof(LibC.uffd_msg));
        if (n < 0)
        {
            int err = Errno.Last;
            if (err == Errno.EAGAIN || err == Errno.EINTR) return false;
            Drop(p, $"reading its uffd failed: {Errno.Name(err)}");
            return false;
        }
        if (n == 0) { Drop(p, "its uffd reached end of file"); return false; }
        if (n != sizeof(LibC.uffd_msg)) throw new InvalidOperationException($"short uffd message ({n} bytes) from {p.Name}");
        switch (msg.@event)
        {
            case LibC.UFFD_EVENT_PAGEFAULT:
                Stats.Fault();
                p.FaultQueue.Enqueue((msg.pf_address & ~(ulong)(PageSize - 1), Stopwatch.GetTimestamp()));
                break;
            case LibC.UFFD_EVENT_FORK: OnFork(p, (int)msg.fork_ufd); break;
            case LibC.UFFD_EVENT_REMAP: OnRemap(p, msg.remap_from, msg.remap_to, msg.remap_len); break;
            case LibC.UFFD_EVENT_REMOVE:
            case LibC.UFFD_EVENT_UNMAP: OnRemove(p, msg.remove_start, msg.remove_end); break;
            default: _log($"lazy-pages: {p.Name}: unknown uffd event 0x{msg.@event:x}"); break;
        }
        return true;
    }

    private void OnFork(LazyProcess parent, int childUffd)
    {
        SetNonBlocking(childUffd);
        LibC.fcntl(childUffd, LibC.F_SETFD, LibC.FD_CLOEXEC);
        var pending = parent.Pending.Clone();
        foreach (var c in parent.Claims) foreach (var r in c.Ranges) pending.Add(r);
        var child = new LazyProcess(childUffd, 0, parent.SourcePid, $"child of {parent.Name} (uffd {childUffd})", pending);
        Stats.Forked();
        Publish(child);
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

    /// <summary>Reads pending events (queuing faults) after an EAGAIN; yields if none is readable yet.</summary>
    private void AfterEagain(LazyProcess p, ref int spins)
    {
        Stats.Eagain();
        bool any = false;
        while (ReadOne(p)) any = true;
        if (!any)
        {
            if (++spins > 1000) Thread.Sleep(1);
            else Thread.Yield();
        }
    }

    private void ServeFault(LazyProcess p, ulong addr, long ticks)
    {
        int spins = 0;
        ulong zeroCap = ulong.MaxValue;
        while (!p.Gone)
        {
            if (p.Pending.TryFind(addr, out var range))
            {
                var window = ChooseWindow(p, addr, range);
                p.Pending.Remove(window.Start, window.End);
                try
                {
                    _faultChannel!.Read(p.SourcePid, window.ImageStart, new Span<byte>(_faultBuf, (int)window.Length));
                }
                catch (Exception e)
                {
                    p.Pending.Add(window);
                    FailProcess(p, $"page source failed at {window.ImageStart:x}: {e.Message}");
                    return;
                }
                var outcome = CopyRange(p, window, _faultBuf, window.ImageStart, addr);
                if (outcome == FillStatus.Again) { AfterEagain(p, ref spins); continue; }
                if (outcome == FillStatus.Ok) Stats.FaultLatency(Stopwatch.GetTimestamp() - ticks);
                p.PrefetchHint = window.End;
                return;
            }
            if (p.IsClaimed(addr))
            {
                p.Parked.Add((addr, ticks));
                return;
            }
            // zeros: up to ZeroAroundPages forward, stopping before anything pending or claimed
            // (a present page stops the kernel with EEXIST; a VMA end gives ENOENT: then one page)
            ulong zlen = ZeroWindow(p, addr, zeroCap);
            var z = Uffd.ZeroPage(p.Uffd, addr, zlen);
            switch (z.Status)
            {
                case FillStatus.Ok:
                case FillStatus.Partial:
                    Stats.Zeroed(z.Bytes / PageSize);
                    Stats.FaultLatency(Stopwatch.GetTimestamp() - ticks);
                    return;
                case FillStatus.Again: AfterEagain(p, ref spins); continue;
                case FillStatus.Gone: Drop(p, "exited (ESRCH)"); return;
                case FillStatus.NoVma when zlen > PageSize: zeroCap = PageSize; continue;
                case FillStatus.Failed:
                    _log($"lazy-pages: {p.Name}: UFFDIO_ZEROPAGE at {addr:x}: {Errno.Name(z.Errno)}");
                    Uffd.Wake(p.Uffd, addr, PageSize);
                    return;
                default: // Exists: filled meanwhile; NoVma: unmapped under the fault. Either way wake the waiter.
                    Uffd.Wake(p.Uffd, addr, PageSize);
                    return;
            }
        }
    }

    private ulong ZeroWindow(LazyProcess p, ulong addr, ulong cap)
    {
        ulong end = addr + Math.Min(cap, (ulong)Math.Max(1, _policy.ZeroAroundPages) * PageSize);
        end = Math.Min(end, p.Pending.NextStartAtOrAfter(addr));
        foreach (var c in p.Claims) end = Math.Min(end, c.NextStartAtOrAfter(addr));
        return Math.Max(end - addr, PageSize);
    }

    /// <summary>
    /// The window a fault brings in: the aligned FaultAroundPages block around it, or, when the
    /// fault lands right where the last window ended (sequential access), twice the last window up
    /// to SequentialMaxPages, starting at the fault. Always inside the pending range it hits.
    /// </summary>
    private PendingRange ChooseWindow(LazyProcess p, ulong addr, PendingRange range)
    {
        long pages;
        ulong start;
        if (addr == p.LastWindowEnd && p.LastWindowPages > 0)
        {
            pages = Math.Min(p.LastWindowPages * 2, _policy.SequentialMaxPages);
            start = addr;
        }
        else
        {
            pages = Math.Max(1, _policy.FaultAroundPages);
            ulong block = (ulong)pages * PageSize;
            start = addr / block * block;
        }
        ulong end = start + (ulong)pages * PageSize;
        var w = range.Clip(start, end)!.Value;
        p.LastWindowEnd = w.End;
        p.LastWindowPages = pages;
        return w;
    }

    /// <summary>
    /// UFFDIO_COPY of <paramref name="range"/> whose bytes are at <paramref name="buf"/> (image
    /// address <paramref name="bufImage"/>). Caller holds Gate. On EAGAIN the uncopied rest goes back
    /// to Pending. <paramref name="faultAddr"/> is 0 for prefetch.
    /// </summary>
    private FillStatus CopyRange(LazyProcess p, PendingRange range, byte* buf, ulong bufImage, ulong faultAddr)
    {
        ulong cur = range.Start, cap = range.Length;
        while (cur < range.End)
        {
            if (p.Gone) return FillStatus.Gone;
            ulong len = Math.Min(range.End - cur, cap);
            ulong img = range.ImageAddressOf(cur);
            var r = Uffd.Copy(p.Uffd, cur, buf + (img - bufImage), len);
            switch (r.Status)
            {
                case FillStatus.Ok:
                case FillStatus.Partial:
                    Account(cur, (ulong)r.Bytes, faultAddr);
                    cur += (ulong)r.Bytes;
                    break;
                case FillStatus.Exists:
                    Stats.Existed(1);
                    if (faultAddr != 0) Uffd.Wake(p.Uffd, cur, PageSize);
                    cur += PageSize;
                    break;
                case FillStatus.NoVma:
                    if (len > PageSize) { cap = Math.Max(PageSize, len / 2 / PageSize * PageSize); break; }
                    // no registered VMA at this page any more (unmapped without an event we saw?)
                    _log($"lazy-pages: {p.Name}: no VMA at {cur:x}, page dropped");
                    if (faultAddr != 0) Uffd.Wake(p.Uffd, cur, PageSize);
                    cur += PageSize;
                    break;
                case FillStatus.Again:
                    p.Pending.Add(new PendingRange(cur, range.End, range.ImageAddressOf(cur)));
                    return FillStatus.Again;
                case FillStatus.Gone:
                    Drop(p, "exited (ESRCH)");
                    return FillStatus.Gone;
                default:
                    p.Pending.Add(new PendingRange(cur, range.End, range.ImageAddressOf(cur)));
                    FailProcess(p, $"UFFDIO_COPY at {cur:x} failed: {Errno.Name(r.Errno)}");
                    return FillStatus.Failed;
            }
        }
        return FillStatus.Ok;
    }

    private void Account(ulong start, ulong bytes, ulong faultAddr)
    {
        long pages = (long)(bytes / PageSize);
        if (faultAddr == 0) Stats.Copied(0, 0, pages, (long)bytes);
        else if (faultAddr >= start && faultAddr < start + bytes) Stats.Copied(1, pages - 1, 0, (long)bytes);
        else Stats.Copied(0, pages, 0, (long)bytes);
    }

    private void ReprocessParked(LazyProcess p)
    {
        if (p.Parked.Count == 0) return;
        var parked = p.Parked.ToArray();
        p.Parked.Clear();
        foreach (var (a, t) in parked)
        {
            if (p.Gone) break;
            if (p.IsClaimed(a)) p.Parked.Add((a, t));
            else ServeFault(p, a, t);
        }
    }

    // ---------------------------------------------------------------- prefetch

    private void PrefetchLoop()
    {
        IPageChannel? channel = null;
        byte* buf = null;
        int chunkPages = Math.Max(1, _policy.PrefetchChunkPages);
        try
        {
            channel = _options.PageSource.OpenChannel();
            buf = (byte*)NativeMemory.AlignedAlloc((nuint)chunkPages * PageSize, PageSize);
            int rr = 0;
            while (!_stopping)
            {
                if (_policy.PrefetchAfterRestoreFinished && !_restoreFinished && !_noMoreTasksSeen)
                {
                    _prefetchKick.Wait(50);
                    _prefetchKick.Reset();
                    continue;
                }
                var procs = _procs;
                LazyProcess? p = null;
                for (int i = 0; i < procs.Length; i++)
                {
                    var q = procs[(rr + i) % procs.Length];
                    if (!q.Gone && !q.Failed && !q.Pending.IsEmpty) { p = q; rr = (rr + i + 1) % procs.Length; break; }
                }
                if (p == null)
                {
                    _prefetchKick.Wait(20);
                    _prefetchKick.Reset();
                    continue;
                }
                if (channel is IPipelinedPageChannel pipe) PrefetchPipelined(pipe, buf, chunkPages, ref rr);
                else PrefetchOne(p, channel, buf, chunkPages);
            }
        }
        catch (Exception e)
        {
            // the fault loop sees this and poisons what is left: without prefetch nothing completes
            _prefetchFailure = e;
            WakeFaultLoop();
        }
        finally
        {
            channel?.Dispose();
            if (buf != null) NativeMemory.AlignedFree(buf);
        }
    }

    /// <summary>Chunks a pipelined prefetch keeps requested ahead of the one being copied.</summary>
    private const int PipelineDepth = 3;

    /// <summary>
    /// Prefetch over a channel that pipelines (a remote page server): up to
    /// <see cref="PipelineDepth"/> chunks are claimed and requested ahead, so the server reads and
    /// sends the next chunks while this thread copies the current one. Returns when nothing is
    /// left to claim and every answer is in, or on stop. Claims work as in
    /// <see cref="PrefetchOne"/>: a fault on a claimed range waits for its chunk.
    /// </summary>
    private void PrefetchPipelined(IPipelinedPageChannel channel, byte* buf, int chunkPages, ref int rr)
    {
        var inflight = new Queue<(LazyProcess P, PendingRange Chunk, PageRangeSet Claim)>();
        try
        {
            while (!_stopping)
            {
                while (inflight.Count < PipelineDepth && !_stopping)
                {
                    var next = ClaimNext(chunkPages, ref rr);
                    if (next is not { } c) break;
                    channel.Request(c.P.SourcePid, c.Chunk.ImageStart, (int)(c.Chunk.Length / PageSize));
                    inflight.Enqueue(c);
                }
                if (inflight.Count == 0) return;
                var (p, chunk, claim) = inflight.Peek();
                channel.Receive(p.SourcePid, chunk.ImageStart, new Span<byte>(buf, (int)chunk.Length));
                inflight.Dequeue();
                if (FinishChunk(p, chunk, claim, buf)) WakeFaultLoop();
            }
        }
        catch (PageSourceException e)
        {
            // The channel is gone with every answer still due: give those ranges back and fail their processes.
            bool wake = false;
            foreach (var (p, chunk, claim) in inflight) wake |= GiveBack(p, chunk, claim, e.Message);
            if (wake) WakeFaultLoop();
        }
    }

    /// <summary>Claims the next prefetch chunk of the next process with pages left (round robin), or null.</summary>
    private (LazyProcess P, PendingRange Chunk, PageRangeSet Claim)? ClaimNext(int chunkPages, ref int rr)
    {
        var procs = _procs;
        for (int i = 0; i < procs.Length; i++)
        {
            var p = procs[(rr + i) % procs.Length];
            if (ClaimChunk(p, chunkPages) is not { } c) continue;
            rr = (rr + i + 1) % procs.Length;
            return (p, c.Chunk, c.Claim);
        }
        return null;
    }

    /// <summary>
    /// Takes the next chunk of <paramref name="p"/>'s pending pages at its prefetch hint out of
    /// Pending and into a claim (a fault on it waits for the chunk), or null if none is left.
    /// </summary>
    private static (PendingRange Chunk, PageRangeSet Claim)? ClaimChunk(LazyProcess p, int chunkPages)
    {
        lock (p.Gate)
        {
            if (p.Gone || p.Failed) return null;
            var first = p.Pending.FirstAtOrAfter(p.PrefetchHint);
            if (first == null) return null;
            var r = first.Value;
            ulong start = r.Contains(p.PrefetchHint) ? p.PrefetchHint : r.Start;
            var chunk = r.Clip(start, start + (ulong)chunkPages * PageSize)!.Value;
            p.Pending.Remove(chunk.Start, chunk.End);
            var claim = new PageRangeSet([chunk]);
            p.Claims.Add(claim);
            p.PrefetchHint = chunk.End;
            return (chunk, claim);
        }
    }

    /// <summary>A chunk that could not be fetched: its ranges go back to Pending and its process fails; true if the fault loop should look.</summary>
    private bool GiveBack(LazyProcess p, PendingRange chunk, PageRangeSet claim, string why)
    {
        lock (p.Gate)
        {
            p.Claims.Remove(claim);
            if (p.Gone) return false;
            foreach (var r in claim.Ranges) p.Pending.Add(r);
            FailProcess(p, $"page source failed at {chunk.ImageStart:x}: {why}");
            return true;
        }
    }

    /// <summary>Copies a received chunk into what is left of its claim; true if the fault loop should look.</summary>
    private bool FinishChunk(LazyProcess p, PendingRange chunk, PageRangeSet claim, byte* buf)
    {
        bool wake = false;
        lock (p.Gate)
        {
            p.Claims.Remove(claim);
            if (p.Gone) return false;
            var pieces = claim.Ranges.ToArray();
            for (int i = 0; i < pieces.Length; i++)
            {
                var s = CopyRange(p, pieces[i], buf, chunk.ImageStart, 0);
                if (s == FillStatus.Again)
                {
                    // events are pending: the fault loop reads them; give the rest back
                    for (int j = i + 1; j < pieces.Length; j++) p.Pending.Add(pieces[j]);
                    wake = true;
                    break;
                }
                if (s != FillStatus.Ok) break;
            }
            if (p.Parked.Count > 0 || p.FaultQueue.Count > 0 || p.Complete) wake = true;
        }
        return wake;
    }

    private void PrefetchOne(LazyProcess p, IPageChannel channel, byte* buf, int chunkPages)
    {
        if (ClaimChunk(p, chunkPages) is not { } c) return;
        Exception? failure = null;
        try { channel.Read(p.SourcePid, c.Chunk.ImageStart, new Span<byte>(buf, (int)c.Chunk.Length)); }
        catch (Exception e) { failure = e; }
        bool wake = failure != null ? GiveBack(p, c.Chunk, c.Claim, failure.Message) : FinishChunk(p, c.Chunk, c.Claim, buf);
        if (wake) WakeFaultLoop();
    }

    // ---------------------------------------------------------------- failures

    private void Fail(string message)
    {
        lock (_failures) _failures.Add(message);
        _log(message);
    }

    /// <summary>
    /// The page source can no longer deliver for this process: poison what it has not got
    /// (SIGBUS on access, waiters woken), or kill it if poisoning is refused. Caller holds Gate.
    /// </summary>
    private void FailProcess(LazyProcess p, string why)
    {
        if (p.Gone || p.Failed) return;
        p.Failed = true;
        foreach (var c in p.Claims) { foreach (var r in c.Ranges) p.Pending.Add(r); c.Clear(); }
        p.Claims.Clear();
        long poisoned = 0;
        int spins = 0;
        string? refused = _policy.KillOnFailure ? "poisoning is turned off (KillOnFailure)" : null;
        while (!p.Gone && !p.Pending.IsEmpty && refused == null)
        {
            var r = p.Pending.Ranges[0];
            p.Pending.Remove(r.Start, r.End);
            ulong cur = r.Start;
            while (cur < r.End)
            {
                var res = Uffd.Poison(p.Uffd, cur, r.End - cur);
                if (res.Status is FillStatus.Ok or FillStatus.Partial) { poisoned += res.Bytes / PageSize; cur += (ulong)res.Bytes; }
                else if (res.Status is FillStatus.Exists or FillStatus.NoVma) cur += PageSize;
                else if (res.Status == FillStatus.Again)
                {
                    p.Pending.Add(new PendingRange(cur, r.End, r.ImageAddressOf(cur)));
                    AfterEagain(p, ref spins);
                    break;
                }
                else if (res.Status == FillStatus.Gone) { Drop(p, "exited (ESRCH)"); break; }
                else { refused = $"UFFDIO_POISON: {Errno.Name(res.Errno)}"; break; }
            }
        }
        Stats.Poisoned(poisoned);
        if (p.Gone) { Fail($"lazy-pages: {p.Name}: {why}; the process is gone"); return; }
        if (refused == null)
        {
            Fail($"lazy-pages: {p.Name}: {why}; poisoned {poisoned} page(s) it had not got: touching them raises SIGBUS");
            ReprocessParked(p);
            ServeQueued(p);
            return;
        }
        Fail($"lazy-pages: {p.Name}: {why}; {refused}, so the process is killed");
        KillPid(p.Pid, p.PidFd, p.Name, why);
        Drop(p, "killed");
    }

    private void KillPid(int pid, int pidfd, string name, string why)
    {
        int rc = -1;
        if (pidfd >= 0) rc = (int)LibC.Syscall(LibC.SYS_pidfd_send_signal, pidfd, LibC.SIGKILL, 0, 0);
        else if (pid > 0) rc = LibC.kill(pid, LibC.SIGKILL);
        if (rc != 0)
            Fail($"lazy-pages: {name}: could not kill it ({(pid > 0 ? Errno.Name(Errno.Last) : "pid unknown")}) after: {why}");
    }

    /// <summary>
    /// Poisons every process's remaining pages (the daemon is going away and the processes must
    /// not read zeros where they had data).
    /// </summary>
    private void PoisonEverything(string why)
    {
        foreach (var p in _procs)
            lock (p.Gate)
                if (!p.Gone && (!p.Pending.IsEmpty || p.Claims.Count > 0)) FailProcess(p, why);
    }

    /// <summary>Forget a process (exited, killed). Caller holds Gate.</summary>
    private void Drop(LazyProcess p, string why)
    {
        if (p.Gone) return;
        p.Gone = true;
        p.GoneReason = why;
        long left = p.Pending.Pages;
        foreach (var c in p.Claims) { left += c.Pages; c.Clear(); }
        p.Pending.Clear();
        p.Parked.Clear();
        p.FaultQueue.Clear();
        if (left > 0 || why != "exited") _log($"lazy-pages: {p.Name} {why}" + (left > 0 ? $" with {left} page(s) never delivered" : ""));
        LibC.close(p.Uffd);
        if (p.PidFd >= 0) LibC.close(p.PidFd);
        p.PidFd = -1;
        Unpublish(p);
    }

    // ---------------------------------------------------------------- teardown

    private void Shutdown()
    {
        foreach (var p in _procs)
            lock (p.Gate)
                if (!p.Gone)
                {
                    p.Gone = true;
                    LibC.close(p.Uffd);
                    if (p.PidFd >= 0) LibC.close(p.PidFd);
                }
        _procs = Array.Empty<LazyProcess>();
        foreach (var c in _connections) c.Dispose();
        _connections.Clear();
        _peers.Clear();
        _listener?.Dispose();
        _listener = null;
        try { File.Delete(SocketPath); } catch (IOException) { }
        if (_wakeRead >= 0) LibC.close(_wakeRead);
        if (_wakeWrite >= 0) LibC.close(_wakeWrite);
        _wakeRead = _wakeWrite = -1;
        _faultChannel?.Dispose();
        _faultChannel = null;
        if (_faultBuf != null) NativeMemory.AlignedFree(_faultBuf);
        _faultBuf = null;
    }

    public void Dispose() => _prefetchKick.Dispose();
}
