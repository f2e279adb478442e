using System.Text.RegularExpressions;
using Crisp.Checkpoint.Dump;
using Crisp.Checkpoint.Restore;
using Crisp.Images;
using Crisp.Images.Proto;
using Crisp.Native;
using Crisp.TestSupport;
using Xunit;
using Xunit.Abstractions;
using static Crisp.TestSupport.TestProcesses;

namespace Crisp.Integration.Tests.Restore;

/// <summary>
/// A process whose cwd is the /proc directory of a child that died (zdtm unhashed_proc): dumped
/// with CRIU's PROCFS remap, restored into the /proc directory of a dead stand-in, so that the
/// program still finds getcwd failing with ENOENT and its cwd link "/proc/N (deleted)".
/// </summary>
public sealed partial class DeadProcCwdTests(ITestOutputHelper output) : LiveProcessTest("deadproc")
{
    private const string Script =
        "import os,signal,time\n" +
        "c=os.fork()\n" +
        "if c==0:\n  time.sleep(3600)\n  os._exit(0)\n" +
        "os.chdir('/proc/%d'%c)\nos.kill(c,9)\nos.waitpid(c,0)\n" +
        "def on(s,f):\n" +
        "  try:\n    os.getcwd()\n    r='getcwd worked'\n  except FileNotFoundError:\n    r='ENOENT'\n" +
        "  print('cwd',r,os.readlink('/proc/self/cwd'),flush=True)\n" +
        "signal.signal(signal.SIGUSR1,on)\nprint('ready',c,flush=True)\nwhile True: time.sleep(0.05)\n";

    [GeneratedRegex(@"^cwd ENOENT /proc/\d+ \(deleted\)$")]
    private static partial Regex DeadCwd();

    private string Check(int pid, string log)
    {
        int before = Lines(log).Length;
        LibC.kill(pid, LibC.SIGUSR1);
        string line = WaitForLine(log, l => l.StartsWith("cwd "), skip: before);
        output.WriteLine(line);
        return line;
    }

    [Fact]
    public unsafe void A_cwd_in_the_proc_directory_of_a_dead_child_stays_a_dead_process_directory()
    {
        string log = Path.Combine(Dir, "log");
        int pid = Track(SpawnLogged(log, "/usr/bin/python3", "-c", Script));
        string dead = WaitForLine(log, l => l.StartsWith("ready "), timeoutMs: 30000).Split(' ')[1];
        Assert.Equal($"cwd ENOENT /proc/{dead} (deleted)", Check(pid, log));

        string images = Path.Combine(Dir, "img");
        Dumper.Dump(new DumpOptions { Pid = pid, ImagesDir = images });
        int st;
        LibC.waitpid(pid, &st, 0);
        Crit.DecodeNode(Path.Combine(images, ImageDir.RemapFpathName));
        var remap = Assert.Single(new ImageDir(images).ReadRemaps());
        Assert.Equal(RemapType.Procfs, remap.RemapType);
        Assert.Equal(uint.Parse(dead), remap.RemapId);

        Restorer.Restore(new RestoreOptions { ImagesDir = images, Detached = true });
        Assert.Matches(DeadCwd(), Check(pid, log));
    }
}
