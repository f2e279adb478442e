using System.Diagnostics;
using Crisp.Images;
using Crisp.Images.Pages;
using Crisp.Images.Proto;
using Crisp.Inject;
using Crisp.Native;
using Crisp.Native.ProcFs;

namespace Crisp.Checkpoint.Dump;

/// <summary>
/// `crisp dump`: freeze a process tree, write its state as CRIU-format images, then kill it
/// (or, with LeaveRunning, let it go on). The order matters for safety:
///
///  1. seize every thread of every process (the tree is frozen from here on);
///  2. collect everything: state through ptrace and injected syscalls, files, memory layout;
///     anything unsupported throws here, before a byte is written;
///  3. write the images, pages last but one, inventory.img last: a directory without an
///     inventory is not a dump;
///  4. kill the tree, or resume it.
///
/// If anything fails the tree is resumed exactly as it was (injected syscalls have already
/// put their registers and code bytes back) and the error propagates.
/// </summary>
public static partial class Dumper
{
    private const int MEMBARRIER_CMD_GET_REGISTRATIONS = 1 << 9;

    public static DumpResult Dump(DumpOptions options)
    {
        var total = Stopwatch.StartNew();
        if (!Directory.Exists($"/proc/{options.Pid}"))
            throw new CrispException($"no process {options.Pid}");
        if (options.LazyPages && options.ServeLazy is null)
            throw new ArgumentException("a lazy dump needs ServeLazy", nameof(options));
        if (options.PrevImagesDir != null && options.PageSink != null)
            throw new CrispException("--prev-images-dir: a dump to a page server cannot refer to parent images");
        var dir = ImageDir.Create(options.ImagesDir);
        var parentDir = LinkParent(dir, options.PrevImagesDir);
        // A lazy dump's frozen window is a migration's downtime. Reading smaps walks every page
        // table entry (20-60 ms for 1 GiB here), so it is read before the freeze and used if
        // maps, read frozen, shows the same layout; see EarlySmaps.
        var early = options.LazyPages ? EarlySmaps.Read(options.Pid) : null;
        using var ptrace = new PtraceThread();
        SeizedTree tree;
        long freezeStart = DumpResult.UnixNowNs();
        try { tree = SeizedTree.Seize(ptrace, options.Pid); }
        catch (SyscallException e) { throw new CrispException($"cannot freeze process {options.Pid}: {e.Message}", e); }
        var frozen = Stopwatch.StartNew();
        options.Frozen?.Invoke();
        // Established connections: locked and put in repair mode as they are found (TcpRepair.cs).
        var tcp = options.TcpEstablished ? new Sockets.TcpRepairDump(Sockets.NetworkLock.ForDump(options.NetworkLock)) : null;
        Log.I($"seized {tree.Processes.Count} process(es), {tree.Processes.Sum(p => p.Tasks.Count)} thread(s)");
        try
        {
            var sink = options.PageSink ?? new ImageDirPageSink(dir);
            var (pages, lazyRuns, hostPids) = WriteImages(tree, dir, sink, options.LazyPages, early, options, tcp, parentDir);
            ulong lazyPages = lazyRuns.Values.SelectMany(r => r).Aggregate(0UL, (s, r) => s + r.NrPages);
            LazyDumpEnd? end = null;
            if (options.LazyPages)
            {
                Log.I($"images written in {total.Elapsed.TotalMilliseconds:F1} ms; {lazyPages} lazy pages stay in the frozen tree");
                var lazyTree = new LazyDumpTree(hostPids.Keys.ToList(), lazyRuns) { HostPids = hostPids };
                end = options.ServeLazy!(lazyTree);
                early?.Verify();
                if (end == LazyDumpEnd.Resume)
                {
                    tcp?.Resume();
                    tree.Resume();
                    Log.I($"lazy dump of {options.Pid}: nothing was delivered, the tree was resumed");
                }
                else
                {
                    tree.Kill();
                    tcp?.KeepLocked(release: options.UnlockAfterKill);
                }
            }
            else if (options.HoldFrozen is { } hold)
            {
                end = hold();
                if (end == LazyDumpEnd.Resume)
                {
                    tcp?.Resume();
                    tree.Resume();
                    Log.I($"dump of {options.Pid}: the tree was resumed");
                }
                else
                {
                    tree.Kill();
                    tcp?.KeepLocked(release: options.UnlockAfterKill);
                }
            }
            else if (options.LeaveRunning)
            {
                // A later dump can take this one as its parent: its written state is relative to these images.
                if (options.TrackMem) foreach (var p in tree.Processes) WriteTracking.Reset(p, MemoryDump.Vmas(p.Pid, new FileTable(false, true)), dir.Path);
                tcp?.Resume();
                tree.Resume();
            }
            else
            {
                if (options.WaitForKilledTree) tree.Kill();
                else tree.KillWithoutWaiting();
                // Killed in repair mode, its connections closed without a word; the lock stays until restore.
                tcp?.KeepLocked();
            }
            Log.I($"dump of {options.Pid} done: {pages} pages, frozen {frozen.Elapsed.TotalMilliseconds:F1} ms");
            return new DumpResult(tree.Processes.Count, tree.Processes.Sum(p => p.Tasks.Count), pages, frozen.Elapsed, total.Elapsed)
            {
                LazyPages = lazyPages, LazyEnd = end, ParentPages = _parentPages, FreezeStartUnixNs = freezeStart,
            };
        }
        catch
        {
            try { tcp?.Resume(); }
            catch (Exception e) { Log.E($"could not take established connections of {options.Pid} out of repair mode: {e.Message}"); }
            try { tree.Resume(); }
            catch (Exception e) { Log.E($"could not resume {options.Pid} after a failed dump: {e.Message}"); }
            throw;
        }
    }

    [ThreadStatic] private static ulong _parentPages;

    /// <summary>
    /// CRIU's parent link: <c>parent</c> in the images dir, naming <paramref name="prev"/> as given
    /// (relative to the images dir, as CRIU resolves it). Returns the parent directory, or null.
    /// </summary>
    private static string? LinkParent(ImageDir dir, string? prev)
    {
        if (prev is null) return null;
        string full = Path.IsPathRooted(prev) ? prev : Path.GetFullPath(Path.Combine(dir.Path, prev));
        if (!Directory.Exists(full))
            throw new CrispException($"--prev-images-dir {prev}: {full} is no directory");
        if (!File.Exists(Path.Combine(full, ImageDir.InventoryName)))
            throw new CrispException($"--prev-images-dir {prev}: {full} holds no dump (no {ImageDir.InventoryName})");
        string link = dir.PathOf(Crisp.Images.Pages.PagemapReader.ParentLink);
        if (File.Exists(link) || Directory.Exists(link) || new FileInfo(link).LinkTarget != null) File.Delete(link);
        File.CreateSymbolicLink(link, prev);
        return full;
    }

    private sealed record ProcessDump(
        SeizedProcess Process, PstreeEntry Pstree, TaskKobjIdsEntry Ids, Dictionary<int, CoreEntry> Cores,
        MmEntry Mm, List<DumpedVma> Vmas, List<MemoryDump.ScanRun> Runs, FsEntry Fs, List<FdinfoEntry> Fds)
    {
        /// <summary>The UTS namespace the tree owns, read in its root.</summary>
        public UtsnsEntry? Uts { get; init; }
    }

    private static (ulong Pages, Dictionary<int, IReadOnlyList<PageRange>> LazyRuns, Dictionary<int, int> HostPids) WriteImages(
        SeizedTree tree, ImageDir dir, IDumpPageSink sink, bool lazy, EarlySmaps? early, DumpOptions options, Sockets.TcpRepairDump? tcp, string? parentDir)
    {
        _parentPages = 0;
        // Refuses namespaces crisp cannot restore before anything is collected (TreeNamespaces.cs).
        var ns = TreeNamespaces.Check(tree);
        using var netns = DumpedNetns.Begin(tree, ns, tcp);
        var files = new FileTable(options.ExtUnixSk, options.TcpClose, tcp, options.SkipInFlight) { GhostLimit = options.GhostLimit, FileLocks = options.FileLocks };
        files.TreePid = host => ns.Contains(host) ? ns.Dumped(host) : null;
        var nsIds = new NamespaceIds();
        var seccomp = new SeccompDump();
        var sharedAnon = new SharedAnonMemory();
        var dumps = new List<ProcessDump>();
        // CRIU's numbering: 1 is the dumper's own fd table, mm, fs and sighand (the inventory's
        // root_ids); dumped tasks' objects start at 2. A task with files_id 1 would read to CRIU
        // as sharing the dumper's fd table ("Image corruption on kIDs data").
        uint objectId = 2;
        var phase = Stopwatch.StartNew();
        var fdTableOwner = SharedTables(tree);
        foreach (var proc in tree.Processes)
        {
            // A process sharing its parent's fd table (CLONE_FILES) has the parent's files_id and no fds of its own.
            var owner = fdTableOwner.TryGetValue(proc.Pid, out int o) ? dumps.First(d => d.Process.Pid == o) : null;
            uint id = objectId++;
            // On the ptrace thread as a whole: collecting one process is a few hundred small ptrace
            // requests and injected calls, and handing each to that thread and back costs a
            // wake-up of both (50 µs to 2 ms apiece on a busy 2-core machine).
            dumps.Add(proc.Leader.Thread.Invoke(() =>
                Collect(proc, files, seccomp, sharedAnon, nsIds, ns, id, early, ns.OwnUts && proc == tree.Root, parentDir, options.TrackMem, owner)));
        }
        files.FinishSockets();
        files.FinishSharedAnon(sharedAnon);
        files.FinishWatches();
        files.FinishNamespaceFiles(nsIds, dumps.Select(d => d.Ids).Append(nsIds.Own));
        files.FinishTtys();
        Log.D($"dump: collected state of {dumps.Count} process(es) in {phase.Elapsed.TotalMilliseconds:F1} ms (GCs so far: {GC.CollectionCount(0)}/{GC.CollectionCount(1)}/{GC.CollectionCount(2)}, {GC.GetTotalAllocatedBytes() >> 10} KiB allocated)");
        phase.Restart();

        var zombies = tree.Zombies.Select(z => Zombie(z, ns)).ToList();

        // Everything is known and supported: now write.
        dir.WritePstree(dumps.Select(d => d.Pstree).Concat(zombies.Select(z => z.Pstree)));
        if (ns.Nested.Count > 0) NestedPidsImage.Write(dir, ns.Nested);
        foreach (var z in zombies) dir.WriteCore((int)z.Pstree.Pid, z.Core);
        // Image names carry the pids as the tree sees them (CRIU's vpids).
        foreach (var d in dumps)
        {
            int vpid = (int)d.Pstree.Pid;
            foreach (var (tid, core) in d.Cores) dir.WriteCore(ns.Dumped(tid), core);
            dir.WriteIds(vpid, d.Ids);
            dir.WriteMm(vpid, d.Mm);
            dir.WriteFs(vpid, d.Fs);
            if (!fdTableOwner.ContainsKey(d.Process.Pid)) dir.WriteFdinfo(d.Ids.FilesId, d.Fds);
        }
        if (dumps[0].Uts is { } uts) dir.WriteUtsns(uts, dumps[0].Ids.UtsNsId);
        netns?.Write(dir, dumps[0].Ids.NetNsId);
        OwnedNamespaces.Write(tree.Root.Pid, ns, dumps[0].Ids, dumps.SelectMany(d => d.Vmas.Select(v => (d.Process.Pid, v.Entry))), dir);
        dir.WriteFiles(files.Files);
        if (files.PipesData.Count > 0) dir.WritePipesData(files.PipesData);
        if (files.FifoData.Count > 0) dir.WriteFifoData(files.FifoData);
        if (files.TtyInfos.Count > 0) dir.WriteTtyInfo(files.TtyInfos.OrderBy(t => t.Id));
        if (files.TtyData.Count > 0) dir.WriteTtyData(files.TtyData);
        files.WriteMemfds(dir);
        files.WriteGhosts(dir);
        files.WriteFileLocks(dir);
        sharedAnon.Write(dir);
        if (files.SocketQueues.Count > 0) dir.WriteSkQueues(files.SocketQueues);
        if (tcp != null)
            foreach (var (ino, stream) in tcp.Streams) dir.WriteTcpStream(ino, stream);
        Log.D($"dump: wrote state images in {phase.Elapsed.TotalMilliseconds:F1} ms (GCs so far: {GC.CollectionCount(0)}/{GC.CollectionCount(1)}/{GC.CollectionCount(2)}, {GC.GetTotalAllocatedBytes() >> 10} KiB allocated)");
        phase.Restart();
        ulong pages = 0;
        var lazyRuns = new Dictionary<int, IReadOnlyList<PageRange>>();
        var hostPids = new Dictionary<int, int>();
        foreach (var d in dumps)
        {
            int vpid = (int)d.Pstree.Pid;
            hostPids[vpid] = d.Process.Pid;
            using var writer = sink.Open(vpid);
            pages += MemoryDump.WritePages(d.Process.Pid, d.Runs, writer, lazy);
            writer.Complete();
            if (lazy)
                lazyRuns[vpid] = d.Runs.Where(r => (r.Flags & PagemapFlags.Lazy) != 0)
                    .Select(r => new PageRange(r.Vaddr, (ulong)r.Pages)).ToList();
        }
        sink.Finish();
        Log.D($"dump: {pages} pages written in {phase.Elapsed.TotalMilliseconds:F1} ms");
        dir.WriteSeccomp(seccomp.Entry);
        // root_ids are crisp's own namespaces (CRIU's are its own): a tree whose pid_ns_id differs owns its namespace.
        var rootIds = nsIds.Own.Clone();
        rootIds.VmId = rootIds.FilesId = rootIds.FsId = rootIds.SighandId = 1;
        var inventory = ImageDir.NewInventory(rootIds);
        if (options.TcpClose) inventory.TcpClose = true;
        if (tcp != null)
        {
            // Restore finds the lock this dump leaves by these (CRIU's fields, CRIU's table name).
            inventory.NetworkLockMethod = (uint)tcp.Lock.Method;
            inventory.DumpCriuRunId = tcp.Lock.RunId;
        }
        dir.WriteInventory(inventory);
        // What the tree may have picked code paths by: restore compares it with its own CPU.
        dir.WriteCpuinfo(new CpuinfoEntry { X86Entry = { Cpu.CpuFeatures.Host() } });
        return (pages, lazyRuns, hostPids);
    }

    private const int CriuAuxvWords = 44;
}
