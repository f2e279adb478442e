namespace Crisp.Checkpoint.Dump;

public sealed record DumpOptions
{
    /// <summary>Root of the tree to dump (-t): the process and all its descendants.</summary>
    public required int Pid { get; init; }
    public required string ImagesDir { get; init; }
    /// <summary>Leave the tree running after a successful dump (-R); otherwise it is killed.</summary>
    public bool LeaveRunning { get; init; }
    /// <summary>
    /// After a successful dump, wait until the killed tree has exited (true, for callers that go on
    /// running), or only send SIGKILL (false: the command line, which exits right after).
    /// </summary>
    public bool WaitForKilledTree { get; init; } = true;

    /// <summary>
    /// Where pages go (null: pagemap/pages images in <see cref="ImagesDir"/>). With a page server
    /// sink no pagemap or pages image is written locally, as with CRIU's --page-server.
    /// </summary>
    public IDumpPageSink? PageSink { get; init; }

    /// <summary>
    /// Lazy dump (CRIU's dump --lazy-pages): pages of lazy-able VMAs are not read; their pagemap
    /// entries are written as PE_LAZY without data, while the other pages (COW'd pages of private
    /// file mappings, the vDSO, shared anonymous memory) still go to the sink. After the images are
    /// written the tree stays frozen and <see cref="ServeLazy"/> runs; what it returns decides
    /// whether the tree is killed or resumed. Requires <see cref="ServeLazy"/>.
    /// </summary>
    public bool LazyPages { get; init; }

    /// <summary>
    /// Called with the tree frozen and every image written (lazy dumps only), on the dumping thread.
    /// Serves the lazy pages (e.g. a page server reading from the frozen processes) and returns what
    /// to do with the tree. Throwing resumes the tree, so it must only throw while no destination
    /// can have run: once any lazy page was delivered it must return <see cref="LazyDumpEnd.Kill"/>.
    /// </summary>
    public Func<LazyDumpTree, LazyDumpEnd>? ServeLazy { get; init; }

    /// <summary>
    /// Eager dumps (not <see cref="LazyPages"/>): called with the tree frozen and every image
    /// written, on the dumping thread; what it returns decides whether the tree is killed or
    /// resumed (a pre-copy migration's last round: the images go to the destination, which says
    /// whether it runs). Throwing resumes the tree, so it must not throw once the destination may run.
    /// </summary>
    public Func<LazyDumpEnd>? HoldFrozen { get; init; }

    /// <summary>
    /// CRIU's --ext-unix-sk: a datagram unix socket connected to a named socket outside the tree is
    /// dumped, and restore connects it to that name again; without it such a socket is refused.
    /// </summary>
    public bool ExtUnixSk { get; init; }

    /// <summary>CRIU's --tcp-close: established TCP connections are dumped as closed sockets instead of refused.</summary>
    public bool TcpClose { get; init; }

    /// <summary>CRIU's --tcp-established: established TCP connections are dumped through TCP repair (Sockets/TcpRepair.cs).</summary>
    public bool TcpEstablished { get; init; }

    /// <summary>CRIU's --skip-in-flight: connections a listener has not accepted yet are left out instead of refused.</summary>
    public bool SkipInFlight { get; init; }

    /// <summary>
    /// Once the tree is killed in repair mode, release the network lock too instead of leaving it for
    /// the restore (a migration whose connections' addresses left this namespace with the tree:
    /// nothing here can answer them any more, so the lock has nothing left to guard).
    /// </summary>
    public bool UnlockAfterKill { get; init; }

    /// <summary>CRIU's --network-lock: how established connections are kept quiet from the freeze until restore (Sockets/NetworkLock.cs).</summary>
    public Crisp.Checkpoint.Sockets.NetworkLockMethod NetworkLock { get; init; } = Crisp.Checkpoint.Sockets.NetworkLockMethod.Nftables;

    /// <summary>
    /// CRIU's --prev-images-dir: the images of an earlier pre-dump or dump of this tree, as a path
    /// relative to <see cref="ImagesDir"/> (or absolute). The images dir gets a <c>parent</c> symlink
    /// to it, and with <see cref="TrackMem"/> pages not written since are PE_PARENT entries.
    /// </summary>
    public string? PrevImagesDir { get; init; }

    /// <summary>CRIU's --track-mem: use (and, if the tree goes on running, reset) the write tracking of WriteTracking.cs.</summary>
    public bool TrackMem { get; init; }

    /// <summary>CRIU's --ghost-limit: the most bytes on disk a deleted file still open or mapped may hold to be dumped with its contents.</summary>
    public long GhostLimit { get; init; } = DefaultGhostLimit;

    /// <summary>CRIU's default --ghost-limit: 1 MiB.</summary>
    public const long DefaultGhostLimit = 1 << 20;

    /// <summary>CRIU's --file-locks: dump the tree's file locks and leases; without it a tree holding any is refused.</summary>
    public bool FileLocks { get; init; }

    /// <summary>Called once the whole tree is frozen (the start of the downtime a migration reports).</summary>
    public Action? Frozen { get; init; }
}
