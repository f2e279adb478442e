using System.Diagnostics;
using Crisp.Images;
using Crisp.Inject;
using Crisp.Native;

namespace Crisp.Checkpoint.Dump;

public static partial class Dumper
{
    /// <summary>
    /// `crisp pre-dump` (CRIU's): freezes the tree, writes the pages of every process (against the
    /// parent images if <see cref="DumpOptions.PrevImagesDir"/> is set), starts or resets the write
    /// tracking, and lets the tree run on. Only inventory, pagemap and pages images are written:
    /// the images are the parent of a later dump, not a dump of their own.
    /// </summary>
    public static DumpResult PreDump(DumpOptions options)
    {
        var total = Stopwatch.StartNew();
        if (!Directory.Exists($"/proc/{options.Pid}"))
            throw new CrispException($"no process {options.Pid}");
        var dir = ImageDir.Create(options.ImagesDir);
        var parentDir = LinkParent(dir, options.PrevImagesDir);
        using var ptrace = new PtraceThread();
        SeizedTree tree;
        long freezeStart = DumpResult.UnixNowNs();
        try { tree = SeizedTree.Seize(ptrace, options.Pid); }
        catch (SyscallException e) { throw new CrispException($"cannot freeze process {options.Pid}: {e.Message}", e); }
        var frozen = Stopwatch.StartNew();
        try
        {
            var ns = TreeNamespaces.Check(tree);
            SharedTables(tree); // refuses sharing crisp cannot restore; a shared fd table does not matter to memory
            var sink = new ImageDirPageSink(dir);
            ulong pages = 0, inParent = 0;
            var all = new List<(SeizedProcess Proc, List<DumpedVma> Vmas)>();
            foreach (var proc in tree.Processes)
            {
                var vmas = MemoryDump.Vmas(proc.Pid, new FileTable(false, true));
                var runs = Runs(proc.Pid, ns.Dumped(proc.Pid), vmas, parentDir, true, out ulong p);
                inParent += p;
                using var writer = sink.Open(ns.Dumped(proc.Pid));
                pages += MemoryDump.WritePages(proc.Pid, runs, writer);
                writer.Complete();
                all.Add((proc, vmas));
            }
            foreach (var (proc, vmas) in all) WriteTracking.Reset(proc, vmas, dir.Path);
            var rootIds = new NamespaceIds().Own.Clone();
            rootIds.VmId = rootIds.FilesId = rootIds.FsId = rootIds.SighandId = 1;
            var inventory = ImageDir.NewInventory(rootIds);
            dir.WriteInventory(inventory);
            tree.Resume();
            long resumed = DumpResult.UnixNowNs();
            Log.I($"pre-dump of {options.Pid}: {pages} pages written, {inParent} in the parent images, frozen {frozen.Elapsed.TotalMilliseconds:F1} ms");
            return new DumpResult(tree.Processes.Count, tree.Processes.Sum(p => p.Tasks.Count), pages, frozen.Elapsed, total.Elapsed) { ParentPages = inParent, FreezeStartUnixNs = freezeStart, ResumedUnixNs = resumed };
        }
        catch
        {
            try { tree.Resume(); }
            catch (Exception e) { Log.E($"could not resume {options.Pid} after a failed pre-dump: {e.Message}"); }
            throw;
        }
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
