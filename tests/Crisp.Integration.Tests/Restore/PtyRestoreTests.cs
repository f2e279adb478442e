using Crisp.TestSupport;
using Crisp.Checkpoint.Dump;
using Crisp.Checkpoint.Restore;
using Crisp.Integration.Tests.Lazy;
using Crisp.Native;
using Crisp.Native.ProcFs;
using Xunit;
using Xunit.Abstractions;
using static Crisp.TestSupport.TestProcesses;

namespace Crisp.Integration.Tests.Restore;

/// <summary>
/// A pty pair of the tree (tests/workloads/ptypair.py), judged by the program after the restore:
/// window size, the session and foreground group it is the controlling terminal of, the bytes
/// that were queued both ways (a partial canonical line and the echo included), a working pair,
/// and the child's SIGHUP when the master is closed. And the refusal: a master whose session
/// leader is outside the dumped tree.
/// </summary>
public sealed class PtyRestoreTests(ITestOutputHelper output) : LiveProcessTest("ptypairs")
{
    private readonly List<LazyDaemon> _daemons = [];
    private static readonly string Script = Path.Combine(Repo.Workloads, "ptypair.py");

    protected override void AfterKill()
    {
        foreach (var d in _daemons) d.Dispose();
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void A_pty_pair_keeps_its_state_session_and_queued_bytes(bool lazy)
    {
        string log = Path.Combine(Dir, "log");
        int pid = SpawnLogged(log, "/usr/bin/python3", Script, log, "pair");
        Pids.Add(pid);
        int child = int.Parse(WaitForLine(log, l => l.StartsWith("ready child ")).Split(' ')[2]);
        Pids.Insert(0, child);
        WaitForLine(log, l => l == "tick 3");
        ulong ctty = (uint)Proc.Stat(child).TtyNr;
        Assert.Equal(TtyKind.PtySlave, Tty.Classify(ctty).Kind);

        string images = Path.Combine(Dir, "img");
        Dumper.Dump(new DumpOptions { Pid = pid, ImagesDir = images });
        KillAndReap(pid);
        LazyDaemon? daemon = null;
        if (lazy) { daemon = new LazyDaemon(images, Dir); _daemons.Add(daemon); }
        var r = Restorer.Restore(new RestoreOptions { ImagesDir = images, Detached = true, Lazy = lazy });
        Assert.Equal(new[] { pid, child }.Order(), r.Pids.Order());

        // The same pty (index and so device) is the child's controlling terminal again.
        Assert.Equal(ctty, (uint)Proc.Stat(child).TtyNr);
        int lines = Lines(log).Length;
        LibC.kill(pid, LibC.SIGUSR1);
        string check = WaitForLine(log, l => l.StartsWith("check "), skip: lines);
        output.WriteLine(check);
        Assert.Equal($@"check ws=33x99 sid={child} pgrp={child} line=b'hello\n' partial=b'part' echo=b'hello\r\npart' ping=b'ping'", check);
        // Closing the master hangs the terminal up: its session leader gets SIGHUP.
        LibC.kill(pid, LibC.SIGUSR2);
        WaitForLine(log, l => l == "child hup", skip: lines);
        if (daemon != null)
        {
            int rc = daemon.WaitExit();
            Assert.True(rc == 0, $"lazy-pages exit {rc}: {daemon.Stderr}");
            Assert.Equal(0, daemon.Stat("poisoned_pages"));
        }
    }

    [Fact]
    public void A_master_whose_session_leader_is_outside_the_tree_is_refused_and_the_process_keeps_running()
    {
        string log = Path.Combine(Dir, "log");
        int pid = SpawnLogged(log, "/usr/bin/python3", Script, log, "outside");
        Pids.Add(pid);
        int child = int.Parse(WaitForLine(log, l => l.StartsWith("child ")).Split(' ')[1]);
        Pids.Insert(0, child);
        var g = WaitForLine(log, l => l.StartsWith("grandchild ")).Split(' ');
        int grandchild = int.Parse(g[1]);
        Pids.Insert(0, grandchild);
        var e = Assert.Throws<CrispException>(() => Dumper.Dump(new DumpOptions { Pid = grandchild, ImagesDir = Path.Combine(Dir, "img") }));
        output.WriteLine(e.Message);
        Assert.Contains($"fd {g[3]} (/dev/ptmx)", e.Message);
        Assert.Contains($"controlling terminal of session {child}", e.Message);
        int lines = Lines(log).Length;
        WaitForLine(log, l => l.StartsWith("gtick "), skip: lines);
        Assert.Equal("0", Proc.Status(grandchild).TracerPid.ToString());
    }
}
