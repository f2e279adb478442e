using Crisp.Checkpoint.Dump;
using Crisp.Checkpoint.Restore;
using Crisp.Images;
using Crisp.Images.Proto;
using Crisp.Native;
using Xunit;
using static Crisp.TestSupport.TestProcesses;

namespace Crisp.Integration.Tests.Restore;

/// <summary>
/// Open namespace files (tests/workloads/nsfiles.c): fds of the process's own net and uts
/// namespaces come back naming the same namespaces with their fd flags; an fd of a net
/// namespace no process is in any more is refused at dump, naming the fd, and the process goes
/// on as it was.
/// </summary>
public sealed class NamespaceFileTests() : LiveProcessTest("nsfiles")
{
    private int Start(string log, params string[] args)
    {
        string bin = Gcc.Workload("nsfiles");
        int pid = SpawnLogged(log, [bin, .. args]);
        Pids.Add(pid);
        Assert.Equal("ready", WaitForLine(log, l => l == "ready" || l.StartsWith("BAD")));
        return pid;
    }

    [Fact]
    public unsafe void Own_namespace_fds_name_the_same_namespaces_after_restore()
    {
        string log = Path.Combine(Dir, "log");
        int pid = Start(log);
        string images = Path.Combine(Dir, "img");
        Dumper.Dump(new DumpOptions { Pid = pid, ImagesDir = images });
        int st;
        LibC.waitpid(pid, &st, 0);
        Assert.Equal(2, new ImageDir(images).ReadFiles().Count(f => f.Type == FdTypes.Ns));
        int n = Lines(log).Length;
        Restorer.Restore(new RestoreOptions { ImagesDir = images, Detached = true });
        LibC.kill(pid, LibC.SIGUSR1);
        Assert.Equal("check ok", WaitForLine(log, l => l.StartsWith("check ") || l.StartsWith("BAD "), skip: n));
    }

    [Fact]
    public void An_fd_of_a_namespace_nobody_is_in_is_refused_and_the_process_goes_on()
    {
        string log = Path.Combine(Dir, "log");
        int pid = Start(log, "foreign");
        var e = Assert.Throws<CrispException>(() => Dumper.Dump(new DumpOptions { Pid = pid, ImagesDir = Path.Combine(Dir, "img") }));
        Assert.Contains("fd 10 (net:[", e.Message);
        Assert.Contains("namespace that neither crisp nor any process of the tree is in", e.Message);
        Assert.True(Alive(pid));
        int n = Lines(log).Length;
        LibC.kill(pid, LibC.SIGUSR1);
        Assert.Equal("check ok", WaitForLine(log, l => l.StartsWith("check ") || l.StartsWith("BAD "), skip: n));
    }
}
