using System.Globalization;
using Crisp.LazyPages;
using Crisp.Native;

using static Crisp.LazyPages.Tests.LazyClientLayout;
using static Crisp.TestSupport.TestProcesses;

namespace Crisp.LazyPages.Tests;

/// <summary>
/// The hand-off pid is the restorer's: in a restore run under `unshare --pid` it names, in the
/// daemon's namespace, some other process. Here it names a zombie (as the dumped original is,
/// until its parent reaps it), whose pidfd is readable at once: the daemon must not take that
/// for the restored process's exit, close the uffd and leave it reading zeros.
/// </summary>
public sealed class PidNamespaceTests
{
    [Fact]
    public void A_process_in_another_pid_namespace_is_not_confused_with_the_zombie_holding_its_pid_here()
    {
        string client = NativePrograms.Build("lazy_client");
        string tmp = Directory.CreateTempSubdirectory("crisp-pidns-").FullName;
        int keeper = 0;
        try
        {
            // A parent that never waits for its exited child: a zombie.
            string zfile = Path.Combine(tmp, "zombie.pid");
            keeper = ProcessSpawner.Spawn(new SpawnOptions
            {
                Path = "/usr/bin/python3",
                Argv = ["python3", "-c", "import os, sys, time\npid = os.fork()\nif pid == 0: os._exit(0)\n" +
                        "open(sys.argv[1], 'w').write(str(pid))\ntime.sleep(600)", zfile],
                Stdin = StdioSource.DevNull(false),
                Stdout = StdioSource.DevNull(true),
                Stderr = StdioSource.DevNull(true),
            });
            int zombie = 0;
            Assert.True(SpinUntil(() =>
            {
                if (zombie == 0 && File.Exists(zfile) && int.TryParse(File.ReadAllText(zfile).Trim(), CultureInfo.InvariantCulture, out int z)) zombie = z;
                return zombie > 0 && ReadOrEmpty($"/proc/{zombie}/stat").Contains(") Z ", StringComparison.Ordinal);
            }), "no zombie to collide with");

            using var d = new RunningDaemon(Pattern.Source(), PlanFor);
            // In a new pid namespace, the client is forked right after ns_last_pid is set: it gets the zombie's number there.
            string script = $"echo {zombie - 1} > /proc/sys/kernel/ns_last_pid; {client} {d.SocketPath} early; exit $?";
            var (exit, stdout, stderr, timedOut) = NativePrograms.Run("/usr/bin/unshare", TimeSpan.FromSeconds(60),
                "--pid", "--fork", "--mount-proc", "/bin/sh", "-c", script);
            Assert.False(timedOut, "client hung\n" + stderr + "\n" + d.LogText);
            // The collision really happened: the client handed itself over as the zombie's pid.
            Assert.Contains($"pid {zombie}: ", d.LogText);
            Assert.True(exit == 0, $"client exit {exit} (3 = it read zeros where its data was)\n{stderr}\n{d.LogText}");
            Assert.Contains("OK", stdout);
            Assert.True(d.WaitExit(TimeSpan.FromSeconds(30)), "daemon did not exit\n" + d.LogText);
            Assert.True(d.ExitCode == 0, d.LogText);
            Assert.Contains($"pid {zombie} of the restorer's pid namespace is ", d.LogText);
        }
        finally
        {
            if (keeper > 0)
            {
                LibC.kill(keeper, LibC.SIGKILL);
                ProcessSpawner.Wait(keeper);
            }
            Directory.Delete(tmp, recursive: true);
        }
    }

    private static bool SpinUntil(Func<bool> condition, int timeoutMs = 10_000)
    {
        var sw = System.Diagnostics.Stopwatch.StartNew();
        while (!condition())
        {
            if (sw.ElapsedMilliseconds > timeoutMs) return false;
            Thread.Sleep(10);
        }
        return true;
    }
}
