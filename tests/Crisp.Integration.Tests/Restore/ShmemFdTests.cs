using Crisp.Checkpoint.Dump;
using Crisp.Checkpoint.Restore;
using Crisp.Images;
using Crisp.Images.Proto;
using Crisp.Integration.Tests.Lazy;
using Crisp.Integration.Tests.Support;
using Crisp.Native;
using Crisp.TestSupport;
using Xunit;
using Xunit.Abstractions;
using static Crisp.TestSupport.TestProcesses;

namespace Crisp.Integration.Tests.Restore;

/// <summary>
/// Shared anonymous memory that is a file too (tests/workloads/shmemfd.c, like zdtm's shmemfd and
/// shmemfd-priv): its /dev/zero (deleted) fd, a private and a second shared mapping of that fd and
/// a child sharing the anonymous mapping stay one object after the restore, eager and lazy, as the
/// program itself checks; dumped as a memfd, as CRIU does, which CRIU 4.2 restores too.
/// </summary>
public sealed class ShmemFdTests(ITestOutputHelper output) : LiveProcessTest("shmemfd")
{
    private (int Pid, int Child, string Log) Start(string name)
    {
        string log = Path.Combine(Dir, name + ".log");
        int pid = Track(SpawnLogged(log, Gcc.Workload("shmemfd")));
        string ready = WaitForLine(log, l => l.StartsWith("ready ") || l.StartsWith("BAD"));
        Assert.StartsWith("ready ", ready);
        int child = Track(int.Parse(ready[6..]));
        Assert.Equal("check ok", Check(pid, log));   // the checks hold on the live program
        return (pid, child, log);
    }

    private string Check(int pid, string log)
    {
        int before = Lines(log).Length;
        LibC.kill(pid, LibC.SIGUSR1);
        string check = WaitForLine(log, l => l.StartsWith("check ") || l.StartsWith("BAD"), skip: before);
        output.WriteLine(check);
        return check;
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void The_fd_of_shared_anonymous_memory_and_every_mapping_of_it_stay_one_object(bool lazy)
    {
        var (pid, child, log) = Start(lazy ? "lazy" : "eager");
        string images = Path.Combine(Dir, lazy ? "img-lazy" : "img");
        Dumper.Dump(new DumpOptions { Pid = pid, ImagesDir = images });
        Reap(pid);

        Crit.DecodeNode(Path.Combine(images, ImageDir.MemfdName));
        var dir = new ImageDir(images);
        var inode = Assert.Single(dir.ReadMemfdInodes());
        Assert.Equal("/dev/zero", inode.Name);
        Assert.Equal(4ul * 4096, inode.Size);
        // Every mapping of the object, the anonymous ones of parent and child included, names the memfd.
        foreach (int p in new[] { pid, child })
        {
            var files = dir.ReadFiles().Where(f => f.Type == FdTypes.Memfd).ToDictionary(f => f.Id);
            var maps = dir.ReadMm(p).Vmas.Where(v => (v.Status & VmaStatus.VMA_AREA_MEMFD) != 0).ToList();
            Assert.Equal(3, maps.Count);   // the anonymous mapping, the private and the second shared one (the child has them by fork)
            Assert.All(maps, v => Assert.Equal(inode.InodeId, files[(uint)v.Shmid].Memfd.InodeId));
            Assert.DoesNotContain(dir.ReadMm(p).Vmas, v => (v.Status & VmaStatus.VMA_ANON_SHARED) != 0 && v.Shmid == inode.Shmid);
        }

        LazyDaemon? daemon = lazy ? new LazyDaemon(images, Dir) : null;
        try
        {
            var r = Restorer.Restore(new RestoreOptions { ImagesDir = images, Lazy = lazy });
            Assert.Equal(pid, r.Pid);
            Assert.Equal("check ok", Check(pid, log));
        }
        finally { daemon?.Dispose(); }
    }

    [Criu4Fact]
    public void Criu4_restores_crisps_images_of_shared_anonymous_memory_held_as_a_file()
    {
        var (pid, child, log) = Start("interop");
        string images = Path.Combine(Dir, "img-crisp");
        Dumper.Dump(new DumpOptions { Pid = pid, ImagesDir = images });
        Reap(pid);
        // The child, killed with the tree, came to this process (a subreaper): its pid must be free for criu4.
        Assert.True(Poll.Until(() => { TryReap(child); return !Directory.Exists($"/proc/{child}"); }, 10_000), $"process {child} did not go away");
        var (code, text) = Criu4.Run(TimeSpan.FromSeconds(60), "restore", "-D", images, "-d", "-o", "restore.log", "-v4");
        output.WriteLine(text);
        Assert.True(code == 0, $"criu4 restore: exit {code}: {Criu4.Errors(Path.Combine(images, "restore.log"))}");
        // criu4 restore -d leaves the tree to init: killed by pid, not reaped here.
        try { Assert.Equal("check ok", Check(pid, log)); }
        finally
        {
            LibC.kill(child, LibC.SIGKILL);
            LibC.kill(pid, LibC.SIGKILL);
        }
    }
}
