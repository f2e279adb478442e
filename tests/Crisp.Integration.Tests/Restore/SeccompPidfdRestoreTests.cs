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
/// Seccomp filters (per thread, two stacked on one, one of its own on another) and pidfds (on a
/// live child and on one exited and reaped), judged by the program (tests/workloads/seccomppidfd.c),
/// eager and lazy; the images decode with crit.
/// </summary>
public sealed class SeccompPidfdRestoreTests(ITestOutputHelper output) : LiveProcessTest("seccomp")
{
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public unsafe void Filters_per_thread_and_pidfds_live_and_dead_come_back(bool lazy)
    {
        string bin = Gcc.Workload("seccomppidfd");
        string log = Path.Combine(Dir, "log");
        int pid = SpawnLogged(log, bin);
        Pids.Add(pid);
        int child = int.Parse(WaitForLine(log, l => l.StartsWith("ready ")).Split(' ')[1]);
        Pids.Insert(0, child);
        LibC.kill(pid, LibC.SIGUSR1);
        Assert.Equal("check ok", WaitForLine(log, l => l.StartsWith("check ") || l.StartsWith("BAD ")));

        string images = Path.Combine(Dir, "img");
        Dumper.Dump(new DumpOptions { Pid = pid, ImagesDir = images });
        int st;
        LibC.waitpid(pid, &st, 0);
        using (var crit = new TempDir())
        {
            var decoded = Crit.DecodeAll(images);
            string filters = decoded["seccomp.img"].ToJsonString();
            output.WriteLine(filters);
            Assert.Equal(3, System.Text.RegularExpressions.Regex.Matches(filters, "\"filter\"").Count);
        }
        // Debian's crit predates CRIU's pidfd entry (it decodes it as an empty one): read by crisp's own reader.
        {
            var pidfds = new ImageDir(images).ReadFiles().Where(f => f.Type == FdTypes.Pidfd).ToList();
            Assert.Equal(2, pidfds.Count);
            Assert.Single(pidfds, f => f.Pidfd.Nspid == child);
            Assert.Single(pidfds, f => f.Pidfd.Nspid <= 0);
        }

        using var daemon = lazy ? new LazyDaemon(images, Dir) : null;
        int n = Lines(log).Length;
        Restorer.Restore(new RestoreOptions { ImagesDir = images, Detached = true, Lazy = lazy });
        Assert.Contains("Seccomp:\t2", File.ReadAllText($"/proc/{pid}/status"));
        LibC.kill(pid, LibC.SIGUSR1);
        Assert.Equal("check ok", WaitForLine(log, l => l.StartsWith("check ") || l.StartsWith("BAD "), skip: n, timeoutMs: 30000));
        if (daemon != null) Assert.Equal(0, daemon.WaitExit());
    }
}
