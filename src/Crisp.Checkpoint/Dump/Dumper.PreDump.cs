using System.Diagnostics;
using Crisp.Images;
using Crisp.Inject;
using Crisp.Native;

namespace Crisp.Checkpoint.Dump;

public static partial class Dumper
{
    /// <summary>
    /// `crisp pre-dump` (CRIU's): freezes the tree just long enough to find which pages hold data
    /// (against the parent images if <see cref="DumpOptions.PrevImagesDir"/> is set: the pages
    /// written since it) and to start or reset the write tracking, lets the tree run on, and then
    /// copies those pages while it runs. Only inventory, pagemap and pages images are written:
    /// the images are the parent of a later dump, not a dump of their own.
    ///
    /// Why a copy made while the tree runs is still a sound parent: the tracking is re-armed,
    /// frozen, before the tree runs again, so every page written after that moment reads as
    /// written to the next dump (WriteTracking.cs), which then writes it again instead of taking
    /// it from here. A page this copy reads is therefore either unchanged since the re-arm (the
    /// copy is its current content) or written since (the copy may be torn, and is never used:
    /// the next dump carries the page). A page that cannot be read any more (the process unmapped
    /// it meanwhile) is left out of the pagemap, so the next dump cannot take it from here either.
    /// CRIU's pre-dump has the same shape (pages spliced into pipes frozen, copied out after the thaw).
    /// </summary>
    public static DumpResult PreDump(DumpOptions options)
    {
        var total = Stopwatch.StartNew();
        if (!Directory.Exists($"/proc/{options.Pid}"))
            throw new CrispException($"no process {options.Pid}");
        var dir = ImageDir.Create(options.ImagesDir);
        var parentDir = LinkParent(dir, options.PrevImagesDir);
        var found = new List<(int Pid, int Vpid, List<MemoryDump.ScanRun> Runs)>();
        ulong inParent = 0;
        long freezeStart, resumed;
        TimeSpan frozenFor;
        int processes, threads;
        using (var ptrace = new PtraceThread())
        {
            SeizedTree tree;
            freezeStart = DumpResult.UnixNowNs();
            try { tree = SeizedTree.Seize(ptrace, options.Pid); }
            catch (SyscallException e) { throw new CrispException($"cannot freeze process {options.Pid}: {e.Message}", e); }
            var frozen = Stopwatch.StartNew();
            long frozenAt = DumpResult.UnixNowNs();
            try
            {
                var ns = TreeNamespaces.Check(tree);
                SharedTables(tree); // refuses sharing crisp cannot restore; a shared fd table does not matter to memory
                var all = new List<(SeizedProcess Proc, List<DumpedVma> Vmas)>();
                foreach (var proc in tree.Processes)
                {
                    var vmas = MemoryDump.Vmas(proc.Pid, new FileTable(false, true));
                    found.Add((proc.Pid, ns.Dumped(proc.Pid), Runs(proc.Pid, ns.Dumped(proc.Pid), vmas, parentDir, true, out ulong p)));
                    inParent += p;
                    all.Add((proc, vmas));
                }
                Log.D($"pre-dump: seized in {(frozenAt - freezeStart) / 1e6:F1} ms; VMAs and pages scanned in {frozen.Elapsed.TotalMilliseconds:F1} ms");
                // Re-armed before the tree runs: from here every write shows to the next dump.
                var reset = Stopwatch.StartNew();
                foreach (var (proc, vmas) in all) WriteTracking.Reset(proc, vmas, dir.Path);
                Log.D($"pre-dump: write tracking reset in {reset.Elapsed.TotalMilliseconds:F1} ms");
                processes = tree.Processes.Count;
                threads = tree.Processes.Sum(p => p.Tasks.Count);
                tree.Resume();
            }
            catch
            {
                try { tree.Resume(); }
                catch (Exception e) { Log.E($"could not resume {options.Pid} after a failed pre-dump: {e.Message}"); }
                throw;
            }
            frozenFor = frozen.Elapsed;
            resumed = DumpResult.UnixNowNs();
        }
        Log.I($"pre-dump of {options.Pid}: frozen {frozenFor.TotalMilliseconds:F1} ms (scan and write-tracking reset); copying its pages while it runs");
        // The tree runs: the pages are read from it now. A failure here leaves it running as it
        // was (its tracking reset changes nothing for it) and this directory without an
        // inventory, which no dump accepts as a parent.
        var sink = new ImageDirPageSink(dir);
        ulong pages = 0, gone = 0;
        var copy = Stopwatch.StartNew();
        foreach (var (pid, vpid, runs) in found)
        {
            using var writer = sink.Open(vpid);
            pages += MemoryDump.WritePages(pid, runs, writer, running: true, unreadable: out ulong lost);
            gone += lost;
            writer.Complete();
        }
        var rootIds = new NamespaceIds().Own.Clone();
        rootIds.VmId = rootIds.FilesId = rootIds.FsId = rootIds.SighandId = 1;
        var inventory = ImageDir.NewInventory(rootIds);
        dir.WriteInventory(inventory);
        Log.I($"pre-dump of {options.Pid}: {pages} pages written in {copy.Elapsed.TotalMilliseconds:F1} ms while it ran, {inParent} in the parent images" +
              (gone > 0 ? $", {gone} unmapped meanwhile (left out)" : "") + $"; frozen {frozenFor.TotalMilliseconds:F1} ms");
        return new DumpResult(processes, threads, pages, frozenFor, total.Elapsed) { ParentPages = inParent, FreezeStartUnixNs = freezeStart, ResumedUnixNs = resumed };
    }

    /// <summary>
    /// The runs to dump for one process: with a parent and --track-mem, clean pages the parent
    /// has become PE_PARENT holes. The tracking must be relative to that very parent (see
    /// WriteTracking.RelativeTo); when it is not, every page is dumped, and the log says why.
    /// </summary>
    private static List<MemoryDump.ScanRun> Runs(int pid, int vpid, List<DumpedVma> vmas, string? parentDir, bool trackMem, out ulong inParent)
    {
        inParent = 0;
        if (parentDir is null || !trackMem) return MemoryDump.PresentRuns(pid, vmas);
        string name = ImageDir.PagemapName(vpid);
        if (!File.Exists(Path.Combine(parentDir, name)))
        {
            Log.I($"process {pid}: no {name} in the parent images: every page is dumped");
            return MemoryDump.PresentRuns(pid, vmas);
        }
        if (!WriteTracking.RelativeTo(pid, parentDir))
        {
            Log.W($"process {pid}: its memory is not tracked since the parent images {parentDir} were written: every page is dumped");
            return MemoryDump.PresentRuns(pid, vmas);
        }
        using var parent = new ImageDir(parentDir).OpenPagemap(vpid);
        return MemoryDump.AgainstParent(MemoryDump.PresentRuns(pid, vmas, written: true), parent, out inParent);
    }
}
