using Crisp.Checkpoint.Dump;
using Crisp.Checkpoint.Restore;
using Crisp.Images;
using Crisp.Integration.Tests.Lazy;
using Crisp.Integration.Tests.Support;
using Crisp.Native;
using Crisp.TestSupport;
using Xunit;
using Xunit.Abstractions;
using static Crisp.TestSupport.TestProcesses;

namespace Crisp.Integration.Tests.Restore;

/// <summary>
/// Deleted files still open or mapped (ghost files), a removed directory still open, named FIFOs
/// with buffered bytes (one deleted), and file locks (tests/workloads/deletedfiles.c), judged by
/// what the program sees after the restore; and the refusals: locks without --file-locks, a
/// ghost above --ghost-limit, a pty master.
/// </summary>
public sealed class DeletedFileRestoreTests(ITestOutputHelper output) : LiveProcessTest("deletedfiles")
{
    private readonly List<IDisposable> _daemons = [];

    protected override void AfterKill()
    {
        foreach (var d in _daemons) d.Dispose();
    }

    private (int Pid, string Log, string Work) Start()
    {
        string bin = Gcc.Workload("deletedfiles");
        string work = Path.Combine(Dir, "work");
        Directory.CreateDirectory(work);
        string log = Path.Combine(Dir, "log");
        int pid = SpawnLogged(log, bin, work);
        Pids.Add(pid);
        WaitForLine(log, l => l == "tick 2");
        return (pid, log, work);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public unsafe void Deleted_files_fifos_and_locks_come_back_as_they_were(bool lazy)
    {
        var (pid, log, work) = Start();
        LibC.kill(pid, LibC.SIGUSR1);
        string before = WaitForLine(log, l => l.StartsWith("check "));
        Assert.Equal("check ghost=hello far=far! pos=3 size=1048580 blocks_small=1 nlink=0 deleted=1 map=mapped dir_nlink=0 " +
                     "fifo=queued gfifo_mode=604 lock=Y", before);

        string images = Path.Combine(Dir, "img");
        Dumper.Dump(new DumpOptions { Pid = pid, ImagesDir = images, FileLocks = true });
        int st;
        LibC.waitpid(pid, &st, 0);
        foreach (var f in Directory.GetFiles(images, "ghost-file-*.img").Select(Path.GetFileName)
                     .Concat([ImageDir.FilesName, ImageDir.RemapFpathName, ImageDir.FifoDataName, ImageDir.FileLocksName]))
            Crit.DecodeNode(Path.Combine(images, f!));
        // The sparse ghost's hole is not in the image.
        Assert.True(Directory.GetFiles(images, "ghost-file-*.img").Sum(f => new FileInfo(f).Length) < 64 << 10);
        int lines = Lines(log).Length;

        if (lazy) _daemons.Add(new LazyDaemon(images, Dir));
        Restorer.Restore(new RestoreOptions { ImagesDir = images, Lazy = lazy, FileLocks = true });
        WaitForLine(log, l => l.StartsWith("tick "), skip: lines);
        LibC.kill(pid, LibC.SIGUSR1);
        Assert.Equal(before, WaitForLine(log, l => l.StartsWith("check "), skip: lines));
        // Nothing of the ghosts is left with a name: the directory holds only the FIFO and the locked file.
        Assert.Equal("fifo,locked", string.Join(",", Directory.GetFileSystemEntries(work).Select(Path.GetFileName).Order()));
    }

    [Fact]
    public void Locks_without_file_locks_and_a_ghost_above_the_limit_are_refused_and_the_process_keeps_running()
    {
        var (pid, log, _) = Start();
        var e = Assert.Throws<CrispException>(() => Dumper.Dump(new DumpOptions { Pid = pid, ImagesDir = Path.Combine(Dir, "img1") }));
        output.WriteLine(e.Message);
        Assert.Contains("--file-locks", e.Message);
        e = Assert.Throws<CrispException>(() => Dumper.Dump(new DumpOptions { Pid = pid, ImagesDir = Path.Combine(Dir, "img2"), FileLocks = true, GhostLimit = 1024 }));
        output.WriteLine(e.Message);
        Assert.Contains("above the ghost limit of 1024", e.Message);
        Assert.False(File.Exists(Path.Combine(Dir, "img2", ImageDir.InventoryName)), "a failed dump must not look complete");

        Assert.Equal("0", Crisp.Native.ProcFs.Proc.Status(pid).TracerPid.ToString());
        int lines = Lines(log).Length;
        LibC.kill(pid, LibC.SIGUSR1);
        Assert.Contains("lock=Y", WaitForLine(log, l => l.StartsWith("check "), skip: lines));
    }
}
