using System.Globalization;
using Crisp.Images;
using Crisp.Integration.Tests.Support;
using Crisp.Native;
using Crisp.Native.ProcFs;
using Crisp.TestSupport;
using Xunit;

namespace Crisp.Integration.Tests.Dump;

/// <summary>`crisp dump` on real processes: what the images hold, judged by crit and by the workloads themselves.</summary>
public class DumpTests
{
    private static List<(ulong Start, ulong End, int Prot)> Layout(int pid) =>
        Proc.Maps(pid).Select(v => (v.Start, v.End, v.Prot)).ToList();

    private static List<(ulong Start, ulong End, int Prot)> Layout(ImageDir images, int pid) =>
        images.ReadMm(pid).Vmas.Select(v => (v.Start, v.End, (int)v.Prot)).ToList();

    [Fact]
    public void Single_threaded_process_dumps_its_layout_and_exactly_its_memory()
    {
        using var dir = new TempDir();
        using var w = new Memtouch(dir, mib: 16);
        var before = Layout(w.Pid);

        var r = CrispCli.Run(dir, "dump", "-t", w.Pid.ToString(CultureInfo.InvariantCulture), "-D", dir["img"], "-o", "dump.log", "-v4", "-R");
        Assert.True(r.ExitCode == 0, r.ToString());

        var decoded = Crit.DecodeAll(dir["img"]);
        foreach (var name in new[] { "inventory.img", "pstree.img", $"core-{w.Pid}.img", $"mm-{w.Pid}.img", $"pagemap-{w.Pid}.img", $"fs-{w.Pid}.img", "files.img", $"ids-{w.Pid}.img" })
            Assert.True(decoded.ContainsKey(name), $"{name} missing");

        var images = new ImageDir(dir["img"]);
        Assert.Equal(before, Layout(images, w.Pid));

        using var pages = images.OpenPagemap(w.Pid);
        var (addr, sum) = w.Buffers[0];
        var buf = new byte[w.Mib << 20];
        pages.Read(addr, buf);
        Assert.Equal(sum, Memtouch.Checksum(buf));

        // -R: still running, memory intact, counter still moving.
        Assert.StartsWith("check ok", w.Check(w.Pid));
        long n = w.Ticks().Last().N;
        Assert.True(Poll.Until(() => w.Ticks().Last().N > n + 3), "ticks stopped after dump -R");
    }

    [Fact]
    public void Multi_threaded_process_dumps_every_thread_and_every_buffer_then_is_killed()
    {
        using var dir = new TempDir();
        using var w = new Memtouch(dir, mib: 4, threads: 3);
        var tids = Proc.Tasks(w.Pid);
        Assert.Equal(4, tids.Count);

        var r = CrispCli.Run(dir, "dump", "-t", w.Pid.ToString(CultureInfo.InvariantCulture), "-D", dir["img"], "-o", "dump.log", "-v4");
        Assert.True(r.ExitCode == 0, r.ToString());

        // Without -R the process is gone after a successful dump.
        Assert.True(Poll.Until(() => !File.Exists($"/proc/{w.Pid}/stat") || Proc.Stat(w.Pid).State == 'Z'), "process still alive after dump");

        var images = new ImageDir(dir["img"]);
        var pstree = Assert.Single(images.ReadPstree());
        Assert.Equal(tids.Select(t => (uint)t).Order(), pstree.Threads.Order());
        foreach (var tid in tids)
        {
            var core = images.ReadCore(tid);
            Assert.NotNull(core.ThreadInfo);
            Assert.NotEqual(0UL, core.ThreadInfo.Gpregs.Ip);
            Assert.NotEqual(0UL, core.ThreadInfo.Gpregs.FsBase); // each thread has its own TLS
            Crit.DecodeNode(images.PathOf(ImageDir.CoreName(tid)));
        }
        Assert.Equal(tids.Count, images.ReadCore(w.Pid).ThreadInfo.Gpregs.FsBase == 0 ? 0 : tids.Select(t => images.ReadCore(t).ThreadInfo.Gpregs.FsBase).Distinct().Count());

        using var pages = images.OpenPagemap(w.Pid);
        var buf = new byte[w.Mib << 20];
        foreach (var (addr, sum) in w.Buffers)
        {
            pages.Read(addr, buf);
            Assert.Equal(sum, Memtouch.Checksum(buf));
        }
    }

    [Fact]
    public void Bash_loop_dumps_as_a_tree_with_its_child()
    {
        using var dir = new TempDir();
        var log = dir["bash.log"];
        using var bash = ChildProcess.Start("/bin/bash", ["-c", $"i=0; while :; do i=$((i+1)); echo \"tick $i\" >> {log}; sleep 0.05; done"], newSession: true);
        Assert.True(Poll.Until(() => Proc.Children(bash.Pid).Count > 0 && Poll.ReadFile(log).Contains("tick 3")), "bash loop did not start");

        // The loop has a child most of the time, not always: with -R the dump can simply be taken
        // again until it catches one (bash keeps running between attempts).
        ImageDir images = null!;
        List<Crisp.Images.Proto.PstreeEntry> tree = [];
        for (int attempt = 0; attempt < 5 && tree.Count < 2; attempt++)
        {
            string img = dir[$"img{attempt}"];
            var r = CrispCli.Run(dir, "dump", "-t", bash.Pid.ToString(CultureInfo.InvariantCulture), "-D", img, "-o", "dump.log", "-v4", "-R");
            Assert.True(r.ExitCode == 0, r.ToString());
            Crit.DecodeAll(img);
            images = new ImageDir(img);
            tree = images.ReadPstree();
        }
        Assert.True(tree.Count >= 2, $"expected bash and its child, got {tree.Count}");
        Assert.Equal((uint)bash.Pid, tree[0].Pid);
        Assert.Equal(0u, tree[0].Ppid);
        Assert.All(tree.Skip(1), t => Assert.Equal((uint)bash.Pid, t.Ppid));
        Assert.All(tree, t => Assert.Equal((uint)bash.Pid, t.Sid));

        // -R: the loop goes on.
        int lines = Poll.ReadFile(log).Split('\n').Length;
        Assert.True(Poll.Until(() => Poll.ReadFile(log).Split('\n').Length > lines + 2), "bash loop stopped after dump -R");
    }

    [Fact]
    public void Python_loop_dumps_with_its_libraries()
    {
        using var dir = new TempDir();
        var log = dir["py.log"];
        using var py = ChildProcess.Start("/usr/bin/python3", ["-u", "-c", "import time\ni=0\nwhile True:\n i+=1\n print('tick', i, flush=True)\n time.sleep(0.05)"], stdoutFile: log, newSession: true);
        Assert.True(Poll.Until(() => Poll.ReadFile(log).Contains("tick 3"), 20_000), "python loop did not start");
        var before = Layout(py.Pid);

        var r = CrispCli.Run(dir, "dump", "-t", py.Pid.ToString(CultureInfo.InvariantCulture), "-D", dir["img"], "-o", "dump.log", "-v4", "-R");
        Assert.True(r.ExitCode == 0, r.ToString());
        Crit.DecodeAll(dir["img"]);
        var images = new ImageDir(dir["img"]);
        Assert.Equal(before, Layout(images, py.Pid));
        var files = images.ReadFiles();
        Assert.Contains(files, f => f.Reg?.Name.Contains("libc.so", StringComparison.Ordinal) == true);
    }

    [Fact]
    public void Dump_refusing_an_xdp_socket_names_the_fd_and_leaves_the_process_running_unchanged()
    {
        using var dir = new TempDir();
        var log = dir["sock.log"];
        using var py = ChildProcess.Start("/usr/bin/python3", ["-u", "-c",
            "import socket,time\ns=socket.socket(44, socket.SOCK_RAW, 0)\nprint('fd', s.fileno(), flush=True)\ni=0\nwhile True:\n i+=1\n print('tick', i, flush=True)\n time.sleep(0.02)"],
            stdoutFile: log, newSession: true);
        Assert.True(Poll.Until(() => Poll.ReadFile(log).Contains("tick 3"), 20_000), "python did not start");
        string fd = Poll.ReadFile(log).Split('\n')[0].Split(' ')[1];
        var layout = Layout(py.Pid);
        var regsBefore = File.ReadAllText($"/proc/{py.Pid}/status").Split('\n').First(l => l.StartsWith("SigCgt", StringComparison.Ordinal));

        var r = CrispCli.Run(dir, "dump", "-t", py.Pid.ToString(CultureInfo.InvariantCulture), "-D", dir["img"], "-o", "dump.log", "-v4");
        Assert.Equal(1, r.ExitCode);
        Assert.Contains($"fd {fd}", r.Stderr);
        Assert.Contains("is an AF_XDP socket: not supported yet", r.Stderr);
        Assert.False(File.Exists(Path.Combine(dir["img"], "inventory.img")), "a failed dump must not look complete");

        // Running as before: not traced, same layout and handlers, output continues.
        Assert.Equal("0", Proc.Status(py.Pid).TracerPid.ToString(CultureInfo.InvariantCulture));
        Assert.Equal(layout, Layout(py.Pid));
        Assert.Equal(regsBefore, File.ReadAllText($"/proc/{py.Pid}/status").Split('\n').First(l => l.StartsWith("SigCgt", StringComparison.Ordinal)));
        int lines = Poll.ReadFile(log).Split('\n').Length;
        Assert.True(Poll.Until(() => Poll.ReadFile(log).Split('\n').Length > lines + 3), "python stopped after the failed dump");
    }

    [Fact]
    public void Dump_of_a_missing_pid_fails_clearly()
    {
        using var dir = new TempDir();
        var r = CrispCli.Run(dir, "dump", "-t", "999999999", "-D", dir["img"]);
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("no process 999999999", r.Stderr);
    }
}
