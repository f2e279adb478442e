using System.Globalization;
using Crisp.Checkpoint.Restore;
using Crisp.Images;
using Crisp.Images.Proto;
using Crisp.Integration.Tests.Support;
using Crisp.Native;
using Crisp.TestSupport;
using Xunit;
using Xunit.Abstractions;
using static Crisp.Integration.Tests.Remote.RemoteUtil;

namespace Crisp.Integration.Tests.Dump;

/// <summary>
/// crisp pre-dump and dump --prev-images-dir --track-mem (CRIU's incremental dumps) on a
/// dirtier that keeps rewriting part of its memory: the tree runs on after a pre-dump, the
/// final dump writes the written pages and PE_PARENT entries for the rest, and every restore
/// (eager, lazy, CRIU's) passes the workload's own check of every page against its generation.
/// </summary>
public sealed class IncrementalDumpTests(ITestOutputHelper output)
{
    private const int Mib = 64;
    private const long MibPages = Mib * 256L;

    private static (ulong Parent, ulong Present) Count(string images, int pid)
    {
        var reader = ImageReader.Open(Path.Combine(images, ImageDir.PagemapName(pid)), ImageMagic.Pagemap);
        reader.Read(PagemapHead.Parser);
        ulong parent = 0, present = 0;
        while (reader.TryRead(PagemapEntry.Parser, out var e))
        {
            if ((e.Flags & (uint)PagemapFlags.Parent) != 0) parent += e.NrPages;
            if ((e.Flags & (uint)PagemapFlags.Present) != 0) present += e.NrPages;
        }
        return (parent, present);
    }

    private static void Run(TempDir dir, params string[] args)
    {
        var r = CrispCli.Run(dir, args);
        Assert.True(r.ExitCode == 0, $"crisp {string.Join(' ', args)}: {r}");
    }

    /// <summary>pre-dump, pre-dump against it, dump against that: the chain CRIU's docs show.</summary>
    private (ulong Parent, ulong Present) Chain(TempDir dir, Dirtier w)
    {
        Run(dir, "pre-dump", "-t", S(w.Pid), "-D", dir["pre1"], "-o", "pre1.log", "-v4");
        // The tree runs on: it goes on writing after the pre-dump.
        w.WaitForWrites(MibPages / 20);
        Run(dir, "pre-dump", "-t", S(w.Pid), "-D", dir["pre2"], "--prev-images-dir", "../pre1", "-o", "pre2.log", "-v4");
        var pre2 = Count(dir["pre2"], w.Pid);
        output.WriteLine($"pre2: {pre2.Present} pages written, {pre2.Parent} in pre1");
        Assert.True(pre2.Parent > 0, "the second pre-dump left nothing to its parent");
        w.WaitForWrites(MibPages / 20);
        Run(dir, "dump", "-t", S(w.Pid), "-D", dir["img"], "--prev-images-dir", "../pre2", "--track-mem", "-o", "dump.log", "-v4");
        w.Reap();
        var dump = Count(dir["img"], w.Pid);
        output.WriteLine($"dump: {dump.Present} pages written, {dump.Parent} in the parents");
        Assert.Equal("../pre2", new FileInfo(dir["img/parent"]).LinkTarget);
        return dump;
    }

    [Fact]
    public void Pre_dumps_and_a_dump_against_them_restore_every_page()
    {
        using var dir = new TempDir();
        using var w = new Dirtier(dir, Mib, percentPerSecond: 20);
        var (parent, present) = Chain(dir, w);
        // The dirtier rewrote some of its memory in between; most of it stayed in the parents.
        Assert.True(parent > (ulong)MibPages / 2, $"only {parent} pages in the parents");
        Assert.True(present < (ulong)MibPages / 2, $"{present} pages written by the dump");
        Assert.True(new FileInfo(dir["img/pages-1.img"]).Length < MibPages * 4096 / 2);

        var r = Restorer.Restore(new RestoreOptions { ImagesDir = dir["img"] });
        w.Adopt(r.Pid);
        Assert.StartsWith("check ok", w.Check(r.Pid));
    }

    [Fact]
    public void A_lazy_restore_serves_pages_from_the_parent_images()
    {
        using var dir = new TempDir();
        using var w = new Dirtier(dir, Mib, percentPerSecond: 20);
        Chain(dir, w);
        Directory.CreateDirectory(dir["work"]);
        using var daemon = new Crisp.Integration.Tests.Lazy.LazyDaemon(dir["img"], dir.Path, dir["work"]);
        var r = Restorer.Restore(new RestoreOptions { ImagesDir = dir["img"], WorkDir = dir["work"], Lazy = true });
        w.Adopt(r.Pid);
        Assert.StartsWith("check ok", w.Check(r.Pid));
        Assert.True(daemon.WaitExit() == 0, daemon.Stderr);
    }

    [Criu4Fact]
    public void Criu4_restores_crisp_incremental_images()
    {
        using var dir = new TempDir();
        using var w = new Dirtier(dir, Mib, percentPerSecond: 20);
        Chain(dir, w);
        var (code, outText) = Criu4.Run(TimeSpan.FromSeconds(60), "restore", "-D", dir["img"], "-d", "-o", "restore.log", "-v4", "--pidfile", dir["pid"]);
        output.WriteLine(outText);
        Assert.True(code == 0, $"criu4 restore: exit {code}: {Criu4.Errors(Path.Combine(dir["img"], "restore.log"))}");
        int pid = int.Parse(File.ReadAllText(dir["pid"]).Trim(), CultureInfo.InvariantCulture);
        try
        {
            Assert.Contains("Read from parent", File.ReadAllText(Path.Combine(dir["img"], "restore.log")));
            Assert.StartsWith("check ok", w.Check(pid));
        }
        finally { LibC.kill(pid, LibC.SIGKILL); }
    }

    [Fact]
    public void A_dump_against_an_older_pre_dump_than_the_last_writes_every_page()
    {
        using var dir = new TempDir();
        using var w = new Dirtier(dir, Mib, percentPerSecond: 20);
        Run(dir, "pre-dump", "-t", S(w.Pid), "-D", dir["pre1"]);
        w.WaitForWrites(MibPages / 20);
        Run(dir, "pre-dump", "-t", S(w.Pid), "-D", dir["pre2"]);
        w.WaitForWrites(MibPages / 20);
        // The tracking was reset by pre2: against pre1 it would miss what was written in between.
        Run(dir, "dump", "-t", S(w.Pid), "-D", dir["img"], "--prev-images-dir", "../pre1", "--track-mem", "-o", "dump.log", "-v4");
        w.Reap();
        var (parent, present) = Count(dir["img"], w.Pid);
        Assert.Equal(0UL, parent);
        Assert.True(present >= (ulong)MibPages, $"{present} pages");
        var r = Restorer.Restore(new RestoreOptions { ImagesDir = dir["img"] });
        w.Adopt(r.Pid);
        Assert.StartsWith("check ok", w.Check(r.Pid));
    }
}
