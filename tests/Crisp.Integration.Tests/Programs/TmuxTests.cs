using Crisp.TestSupport;
using System.Diagnostics;
using Crisp.Checkpoint.Dump;
using Crisp.Checkpoint.Restore;
using Crisp.Integration.Tests.Lazy;
using Crisp.Native;
using Xunit;
using Xunit.Abstractions;
using static Crisp.TestSupport.TestProcesses;

namespace Crisp.Integration.Tests.Programs;

/// <summary>
/// A tmux server moved with crisp: it holds the master of its pane's pty, its listening unix
/// socket and an event loop; the pane's shell is a session leader with the slave as its
/// controlling terminal. After the restore the shell keeps counting (its own file says so) and
/// tmux clients talk to the restored server through the same socket (capture-pane shows the
/// pane as the restored server keeps drawing it).
/// </summary>
public sealed class TmuxTests(ITestOutputHelper output) : LiveProcessTest("tmuxserver")
{
    private readonly List<LazyDaemon> _daemons = [];
    private static readonly string[] Env = ["PATH=/usr/bin:/bin", "LANG=C", "TERM=xterm"];

    protected override void AfterKill()
    {
        foreach (var d in _daemons) d.Dispose();
    }

    private string Sock => Path.Combine(Dir, "s");

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void A_tmux_server_keeps_its_pane_running_and_answers_clients(bool lazy)
    {
        string counter = Path.Combine(Dir, "counter");
        string loop = $"i=0; while :; do i=$((i+1)); echo \"tick $i\"; echo $i > {counter}; sleep 0.05; done";
        var (rc, text) = Tmux("-f", "/dev/null", "new-session", "-d", "-x", "80", "-y", "24", "/bin/sh", "-c", loop);
        Assert.True(rc == 0, $"tmux new-session: {text}");
        // The server daemonized: its pid and the pane's from the server itself.
        int server = int.Parse(TmuxOk("display-message", "-p", "#{pid}").Trim());
        Pids.Add(server);
        int pane = int.Parse(TmuxOk("display-message", "-p", "#{pane_pid}").Trim());
        Pids.Insert(0, pane);
        long before = WaitForCounter(counter, c => c >= 5);
        Assert.Contains("tick", TmuxOk("capture-pane", "-p"));

        string images = Path.Combine(Dir, "img");
        Dumper.Dump(new DumpOptions { Pid = server, ImagesDir = images });
        Assert.True(WaitGone(server) && WaitGone(pane), "the dumped tmux tree is still there");
        long dumped = ReadCounter(counter) ?? before;
        LazyDaemon? daemon = null;
        if (lazy) { daemon = new LazyDaemon(images, Dir); _daemons.Add(daemon); }
        var r = Restorer.Restore(new RestoreOptions { ImagesDir = images, Detached = true, Lazy = lazy });
        Assert.Equal(server, r.Pid);
        Assert.Contains(pane, r.Pids);

        // The shell goes on from where it was.
        long after = WaitForCounter(counter, c => c >= dumped + 10);
        Assert.True(after > dumped);
        // Clients reach the restored server through its socket, and the pane is drawn anew.
        Assert.Equal(server.ToString(), TmuxOk("display-message", "-p", "#{pid}").Trim());
        var sw = Stopwatch.StartNew();
        long shown = 0;
        while (sw.Elapsed < TimeSpan.FromSeconds(15) && shown <= dumped)
        {
            shown = TmuxOk("capture-pane", "-p").Split('\n').Where(l => l.StartsWith("tick ", StringComparison.Ordinal))
                .Select(l => long.TryParse(l[5..].Trim(), out long n) ? n : 0).DefaultIfEmpty(0).Max();
            if (shown <= dumped) Thread.Sleep(50);
        }
        output.WriteLine($"counter {before} before the dump, {dumped} at it, {after} after; the pane shows tick {shown}");
        Assert.True(shown > dumped, $"capture-pane shows tick {shown}, the shell was at {dumped} when dumped");
        Assert.Equal(pane.ToString(), TmuxOk("display-message", "-p", "#{pane_pid}").Trim());
        if (daemon != null)
        {
            // Every page delivered, nothing poisoned.
            int drc = daemon.WaitExit();
            output.WriteLine(daemon.Stderr);
            Assert.True(drc == 0, $"lazy-pages exit {drc}: {daemon.Stderr}");
            Assert.True(daemon.Stat("fault_pages") > 0, "no page arrived by fault: the restore was not lazy");
            Assert.Equal(0, daemon.Stat("poisoned_pages"));
        }
    }

    /// <summary>Runs a tmux client against the test's server socket; its exit code and output.</summary>
    private (int Rc, string Output) Tmux(params string[] args)
    {
        string log = Path.Combine(Dir, $"client-{Guid.NewGuid():N}.log");
        int pid = ProcessSpawner.Spawn(new SpawnOptions
        {
            Path = "/usr/bin/tmux", Argv = ["tmux", "-S", Sock, .. args], Envp = Env,
            Stdin = StdioSource.DevNull(false),
            Stdout = StdioSource.FromFile(log, LibC.O_WRONLY | LibC.O_CREAT | LibC.O_APPEND),
            Stderr = StdioSource.FromFile(log, LibC.O_WRONLY | LibC.O_CREAT | LibC.O_APPEND),
            NewSession = true,
        });
        int status = ProcessSpawner.Wait(pid);
        string text = File.Exists(log) ? File.ReadAllText(log) : "";
        File.Delete(log);
        return (LibC.WIFEXITED(status) ? status >> 8 : -1, text);
    }

    private string TmuxOk(params string[] args)
    {
        var (rc, text) = Tmux(args);
        Assert.True(rc == 0, $"tmux {string.Join(' ', args)} exited {rc}: {text}");
        return text;
    }

    private static long? ReadCounter(string path)
    {
        try { return long.TryParse(File.ReadAllText(path).Trim(), out long n) ? n : null; }
        catch (IOException) { return null; }
    }

    private static long WaitForCounter(string path, Func<long, bool> done, int timeoutMs = 20000)
    {
        var sw = Stopwatch.StartNew();
        long last = -1;
        while (sw.ElapsedMilliseconds < timeoutMs)
        {
            if (ReadCounter(path) is long n) { last = n; if (done(n)) return n; }
            Thread.Sleep(20);
        }
        throw new TimeoutException($"the pane's counter stayed at {last}");
    }

    /// <summary>The dumped server is no child of the test (tmux daemonized): its reaper is elsewhere.</summary>
    private static bool WaitGone(int pid)
    {
        var sw = Stopwatch.StartNew();
        while (sw.ElapsedMilliseconds < 10000)
        {
            if (!Directory.Exists($"/proc/{pid}")) return true;
            Thread.Sleep(10);
        }
        return false;
    }
}
