using Crisp.Checkpoint.Dump;
using Crisp.Checkpoint.Restore;
using Crisp.Images;
using Crisp.Integration.Tests.Support;
using Crisp.Native;
using Xunit;
using Xunit.Abstractions;
using static Crisp.TestSupport.TestProcesses;

namespace Crisp.Integration.Tests.Sockets;

/// <summary>
/// Descriptors sent over unix sockets with SCM_RIGHTS and not received yet at dump time ("files
/// in flight"), judged by the program that receives them after the restore
/// (tests/workloads/filesinflight.c): a pipe end, an eventfd, a bound UDP socket, a unix socket
/// with data queued for it, an epoll with its registration, one file in flight twice. CRIU 4.2
/// restores crisp's images of them, and crisp CRIU's. A file in flight crisp cannot restore is
/// refused, naming the socket whose queue holds it, and the program still receives it.
/// </summary>
public sealed class FilesInFlightTests(ITestOutputHelper output) : LiveProcessTest("inflight")
{
    private int Start(string log)
    {
        string bin = Gcc.Workload("filesinflight");
        int pid = SpawnLogged(log, bin);
        Pids.Add(pid);
        WaitForLine(log, l => l == "ready");
        return pid;
    }

    private string Check(int pid, string log)
    {
        int before = Lines(log).Length;
        LibC.kill(pid, LibC.SIGUSR1);
        string check = WaitForLine(log, l => l.StartsWith("check "), skip: before);
        output.WriteLine(check);
        return check;
    }

    [Fact]
    public void Files_in_flight_are_received_after_restore_with_their_state()
    {
        string log = Path.Combine(Dir, "log");
        int pid = Start(log);
        string images = Path.Combine(Dir, "img");
        Dumper.Dump(new DumpOptions { Pid = pid, ImagesDir = images });
        Reap(pid);

        var dir = new ImageDir(images);
        var scm = dir.ReadSkQueues().SelectMany(p => p.Entry.Scm).ToList();
        Assert.Equal(4, scm.Count);                                   // pipe; eventfd+UDP; socket; epoll+pipe
        Assert.Equal(6, scm.Sum(s => s.Rights.Count));
        var files = dir.ReadFiles().ToDictionary(f => f.Id);
        var rights = scm.SelectMany(s => s.Rights).ToList();
        Assert.Equal(5, rights.Distinct().Count());                   // the pipe's read end is one file, sent twice
        var fdinfo = dir.ReadFdinfo(dir.ReadIds(pid).FilesId);
        var held = fdinfo.Select(f => f.Id).ToHashSet();
        Assert.All(rights, id => Assert.DoesNotContain(id, held));  // no process holds any of them
        Assert.Contains(rights, id => files[id].Type == Images.Proto.FdTypes.Eventpoll);

        var r = Restorer.Restore(new RestoreOptions { ImagesDir = images, Detached = true });
        Assert.Equal(pid, r.Pid);
        // The descriptors restore made to open the files in flight are gone: the process has its own, no more.
        Assert.Equal(fdinfo.Select(f => (int)f.Fd).Order(), Directory.GetFiles($"/proc/{pid}/fd").Select(f => int.Parse(Path.GetFileName(f))).Order());
        Assert.Equal("check ok", Check(pid, log));
    }

    [Fact]
    public void A_file_in_flight_of_a_kind_crisp_cannot_restore_is_refused_and_still_received()
    {
        string log = Path.Combine(Dir, "uffd.log");
        // A userfaultfd sent to itself and closed: it exists only in the socket's queue.
        string script = "import socket,ctypes,os,time,signal\n" +
                        "u=ctypes.CDLL(None,use_errno=True).syscall(323,0x80000)\n" +
                        "a,b=socket.socketpair()\nsocket.send_fds(a,[b'x'],[u])\nos.close(u)\n" +
                        "def on(s,f):\n  m,fds,_,_=socket.recv_fds(b,10,4)\n  print('got',m.decode(),os.readlink('/proc/self/fd/%d'%fds[0]),flush=True)\n" +
                        "signal.signal(signal.SIGUSR1,on)\nprint('sent',b.fileno(),flush=True)\nwhile True: time.sleep(0.05)\n";
        int pid = SpawnLogged(log, "/usr/bin/python3", "-c", script);
        Pids.Add(pid);
        string fd = WaitForLine(log, l => l.StartsWith("sent "), timeoutMs: 30000).Split(' ')[1];

        var e = Assert.Throws<CrispException>(() => Dumper.Dump(new DumpOptions { Pid = pid, ImagesDir = Path.Combine(Dir, "img") }));
        output.WriteLine(e.Message);
        Assert.Contains($"a file passed with SCM_RIGHTS and not received yet, queued on process {pid}: fd {fd} (socket:[", e.Message);
        Assert.Contains("anon_inode:[userfaultfd]", e.Message);
        Assert.Contains("TracerPid:\t0", File.ReadAllText($"/proc/{pid}/status"));
        Assert.DoesNotContain(Directory.GetFiles($"/proc/{Environment.ProcessId}/fd"), IsUserfaultfd);   // crisp let go of its copy
        LibC.kill(pid, LibC.SIGUSR1);
        Assert.Equal("got x anon_inode:[userfaultfd]", WaitForLine(log, l => l.StartsWith("got ")));
    }

    [Criu4Fact]
    public void Criu4_restores_crisps_images_of_files_in_flight_and_crisp_restores_criu4s()
    {
        string log = Path.Combine(Dir, "interop.log");
        int pid = Start(log);
        string images = Path.Combine(Dir, "img-crisp");
        Dumper.Dump(new DumpOptions { Pid = pid, ImagesDir = images });
        Reap(pid);
        var (code, text) = Criu4.Run(TimeSpan.FromSeconds(60), "restore", "-D", images, "-d", "-o", "restore.log", "-v4");
        output.WriteLine(text);
        Assert.True(code == 0, $"criu4 restore: exit {code}: {Criu4.Errors(Path.Combine(images, "restore.log"))}");
        // criu4 restore -d leaves the tree to init: killed by pid, not reaped here.
        try { Assert.Equal("check ok", Check(pid, log)); }
        finally { LibC.kill(pid, LibC.SIGKILL); }
        WaitGone(pid);

        string log2 = Path.Combine(Dir, "interop2.log");
        int pid2 = Start(log2);
        string images2 = Path.Combine(Dir, "img-criu");
        Directory.CreateDirectory(images2);
        (code, _) = Criu4.Run(TimeSpan.FromSeconds(60), "dump", "-t", pid2.ToString(), "-D", images2, "-o", "dump.log");
        Assert.True(code == 0, $"criu4 dump: exit {code}: {Criu4.Errors(Path.Combine(images2, "dump.log"))}");
        Reap(pid2);
        Restorer.Restore(new RestoreOptions { ImagesDir = images2, Detached = true });
        Assert.Equal("check ok", Check(pid2, log2));
    }

    private static bool IsUserfaultfd(string fdLink)
    {
        try { return new FileInfo(fdLink).LinkTarget == "anon_inode:[userfaultfd]"; }
        catch (IOException) { return false; }   // an fd of the runtime's, closed meanwhile
    }

    private static void WaitGone(int pid)
    {
        var sw = System.Diagnostics.Stopwatch.StartNew();
        while (Directory.Exists($"/proc/{pid}") && sw.ElapsedMilliseconds < 10_000) Thread.Sleep(10);
        Assert.False(Directory.Exists($"/proc/{pid}"), $"process {pid} did not go away");
    }
}
