using Crisp.Checkpoint.Dump;
using Crisp.Checkpoint.Restore;
using Crisp.Images;
using Crisp.Images.Proto;
using Crisp.Integration.Tests.Support;
using Crisp.Native;
using Crisp.TestSupport;
using Xunit;
using Xunit.Abstractions;
using static Crisp.TestSupport.TestProcesses;

namespace Crisp.Integration.Tests.Interop;

/// <summary>
/// The open mode of a mapped file (vma.fdflags, as CRIU reads it from the map_files link):
/// tests/workloads/sharedfilemap.c maps a file it opened O_RDWR shared read-write, shared
/// read-only (made writable with mprotect after the restore) and private. crisp records O_RDWR
/// for all three, and both crisp and CRIU 4.2 restore the mappings so that the program can
/// write through them into the file.
/// </summary>
public sealed class FileMappingModeTests(ITestOutputHelper output) : LiveProcessTest("mapmode")
{
    private (int Pid, string Log) Start(string name)
    {
        string log = Path.Combine(Dir, name + ".log");
        int pid = Track(SpawnLogged(log, Gcc.Workload("sharedfilemap"), Path.Combine(Dir, name + ".dat")));
        Assert.StartsWith("ready ", WaitForLine(log, l => l.StartsWith("ready ") || l.StartsWith("BAD")));
        Assert.Equal("check ok", Check(pid, log));
        return (pid, log);
    }

    private string Check(int pid, string log)
    {
        int before = Lines(log).Length;
        LibC.kill(pid, LibC.SIGUSR1);
        string line = WaitForLine(log, l => l.StartsWith("check ") || l.StartsWith("BAD"), skip: before);
        output.WriteLine(line);
        return line;
    }

    private string Dump(int pid, string name)
    {
        string images = Path.Combine(Dir, name);
        Dumper.Dump(new DumpOptions { Pid = pid, ImagesDir = images });
        Reap(pid);
        Crit.DecodeNode(Path.Combine(images, ImageDir.MmName(pid)));
        var dir = new ImageDir(images);
        var files = dir.ReadFiles().ToDictionary(f => f.Id);
        var maps = dir.ReadMm(pid).Vmas.Where(v => (v.Status & (VmaStatus.VMA_FILE_SHARED | VmaStatus.VMA_FILE_PRIVATE)) != 0 &&
                                                   files[(uint)v.Shmid].Reg?.Name.EndsWith(name + ".dat", StringComparison.Ordinal) == true).ToList();
        Assert.Equal(3, maps.Count);
        Assert.All(maps, v => Assert.Equal((uint)LibC.O_RDWR, v.Fdflags));
        return images;
    }

    [Fact]
    public void Crisp_restores_shared_file_mappings_writable_as_their_file_was_opened()
    {
        var (pid, log) = Start("crisp");
        string images = Dump(pid, "crisp");
        Restorer.Restore(new RestoreOptions { ImagesDir = images, Detached = true });
        Assert.Equal("check ok", Check(pid, log));
    }

    [Criu4Fact]
    public void Criu4_restores_crisps_shared_writable_file_mappings()
    {
        var (pid, log) = Start("criu");
        string images = Dump(pid, "criu");
        var (code, text) = Criu4.Run(TimeSpan.FromSeconds(60), "restore", "-D", images, "-d", "-o", "restore.log", "-v4");
        output.WriteLine(text);
        Assert.True(code == 0, $"criu4 restore: exit {code}: {Criu4.Errors(Path.Combine(images, "restore.log"))}");
        // criu4 restore -d leaves the tree to init: killed by pid, not reaped here.
        try { Assert.Equal("check ok", Check(pid, log)); }
        finally { LibC.kill(pid, LibC.SIGKILL); }
    }
}
