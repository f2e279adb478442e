using System.Net.Sockets;
using Crisp.Checkpoint.Dump;
using Crisp.Checkpoint.Restore;
using Crisp.Integration.Tests.Support;
using Crisp.Native;
using Crisp.TestSupport;
using Xunit;
using Xunit.Abstractions;
using static Crisp.TestSupport.TestProcesses;

namespace Crisp.Integration.Tests.Sockets;

/// <summary>
/// Sockets dumped and restored, judged by the programs that hold them: unix socketpairs with data
/// queued both ways and shut down, a listener with a connection not accepted yet, TCP listeners
/// (a C workload and `python3 -m http.server`), and an established TCP connection refused.
/// </summary>
public sealed class SocketRestoreTests(ITestOutputHelper output) : LiveProcessTest("sockets")
{
    private unsafe string DumpAndWait(int pid)
    {
        string images = Path.Combine(Dir, "img");
        Dumper.Dump(new DumpOptions { Pid = pid, ImagesDir = images });
        int st;
        LibC.waitpid(pid, &st, 0);
        return images;
    }

    [Fact]
    public void Unix_socketpairs_a_pending_connection_and_a_tcp_listener_come_back_with_their_state()
    {
        string bin = Gcc.Workload("unixsockets");
        string log = Path.Combine(Dir, "log");
        int pid = Track(SpawnLogged(log, bin, $"crisp-test-{Environment.ProcessId}-{Guid.NewGuid():N}"[..40]));
        WaitForLine(log, l => l.StartsWith("ready "));
        string images = DumpAndWait(pid);
        using (var crit = new TempDir())
        {
            var decoded = Crit.DecodeAll(images);
            Assert.Contains("sk-queues.img", decoded.Keys);
            string files = decoded["files.img"].ToJsonString();
            Assert.Contains("\"usk\"", files);
            Assert.Contains("\"isk\"", files);
        }

        int before = Lines(log).Length;
        var r = Restorer.Restore(new RestoreOptions { ImagesDir = images, Detached = true });
        Assert.Equal(pid, r.Pid);
        LibC.kill(pid, LibC.SIGUSR1);
        string check = WaitForLine(log, l => l.StartsWith("check "), skip: before);
        output.WriteLine(check);
        Assert.Equal("check ok", check);
    }

    [Fact]
    public void Python_http_server_answers_after_restore()
    {
        string log = Path.Combine(Dir, "http.log");
        // A port outside the ephemeral range: after the dump kills the server, no other test's
        // outgoing connection can take it as its local port before the restore binds it again.
        int pid = Track(SpawnLogged(log, "/usr/bin/python3", "-u", "-m", "http.server", Crisp.Integration.Tests.Lazy.LoopbackPort.OutsideEphemeral().ToString(),
            "--bind", "127.0.0.1", "--directory", Dir));
        string line = WaitForLine(log, l => l.StartsWith("Serving HTTP on 127.0.0.1 port "), timeoutMs: 30000);
        int port = int.Parse(line.Split(' ')[5]);
        File.WriteAllText(Path.Combine(Dir, "hello.txt"), "restored");
        Assert.Equal("restored", Get(port, "/hello.txt"));
        string images = DumpAndWait(pid);
        Assert.False(Alive(pid));

        Restorer.Restore(new RestoreOptions { ImagesDir = images, Detached = true });
        Assert.Equal("restored", Get(port, "/hello.txt"));
        Assert.Equal("restored", Get(port, "/hello.txt"));
    }

    [Fact]
    public void A_python_poll_loop_on_a_socketpair_gets_the_queued_message_and_new_ones_after_restore()
    {
        string log = Path.Combine(Dir, "poll.log");
        // The message is sent before the loop starts: it is still queued in the socket at dump time.
        string script = "import socket,select,signal,time\n" +
                        "a,b=socket.socketpair()\np=select.poll()\np.register(a,select.POLLIN)\n" +
                        "b.send(b'before')\nsignal.signal(signal.SIGUSR1,lambda s,f:b.send(b'ping'))\n" +
                        "print('ready',flush=True)\ntime.sleep(3)\n" +
                        "while True:\n  for fd,ev in p.poll(1000): print('got',a.recv(100).decode(),flush=True)\n";
        int pid = Track(SpawnLogged(log, "/usr/bin/python3", "-u", "-c", script));
        WaitForLine(log, l => l == "ready", timeoutMs: 30000);
        string images = DumpAndWait(pid);
        Assert.DoesNotContain("got before", Lines(log));

        Restorer.Restore(new RestoreOptions { ImagesDir = images, Detached = true });
        WaitForLine(log, l => l == "got before", timeoutMs: 15000);
        LibC.kill(pid, LibC.SIGUSR1);
        WaitForLine(log, l => l == "got ping", timeoutMs: 15000);
        Assert.Equal(["got before", "got ping"], Lines(log).Where(l => l.StartsWith("got ")));
    }

    [Fact]
    public void An_established_tcp_connection_is_refused_naming_the_fd_and_the_process_goes_on()
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new System.Net.IPEndPoint(System.Net.IPAddress.Loopback, 0));
        listener.Listen();
        int port = ((System.Net.IPEndPoint)listener.LocalEndPoint!).Port;
        string log = Path.Combine(Dir, "client.log");
        string script = $"import socket,time\ns=socket.create_connection(('127.0.0.1',{port}))\nprint('connected',flush=True)\nwhile True:\n  time.sleep(0.05)\n";
        int pid = Track(SpawnLogged(log, "/usr/bin/python3", "-c", script));
        using var server = listener.Accept();
        WaitForLine(log, l => l == "connected", timeoutMs: 30000);

        var e = Assert.Throws<CrispException>(() => Dumper.Dump(new DumpOptions { Pid = pid, ImagesDir = Path.Combine(Dir, "img") }));
        output.WriteLine(e.Message);
        Assert.Matches(@"fd \d+ \(socket:\[\d+\]\) is an IPv4 TCP connection in state ESTABLISHED", e.Message);
        Assert.Contains("--tcp-close", e.Message);
        Assert.True(Alive(pid));
        Assert.Contains("TracerPid:\t0", File.ReadAllText($"/proc/{pid}/status"));
        server.Send("x"u8.ToArray());
        Thread.Sleep(100);
        Assert.True(Alive(pid));
    }

    [Fact]
    public void A_unix_socket_connected_outside_the_tree_is_refused_naming_the_fd_and_the_process_goes_on()
    {
        string name = $"crisp-outside-{Environment.ProcessId}-{Guid.NewGuid():N}"[..40];
        using var outside = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        outside.Bind(new UnixDomainSocketEndPoint("\0" + name));
        outside.Listen();
        string log = Path.Combine(Dir, "unix.log");
        string script = $"import socket,time\ns=socket.socket(socket.AF_UNIX)\ns.connect('\\0{name}')\nprint('connected',s.fileno(),flush=True)\nwhile True:\n  time.sleep(0.05)\n";
        int pid = Track(SpawnLogged(log, "/usr/bin/python3", "-c", script));
        using var accepted = outside.Accept();
        string fd = WaitForLine(log, l => l.StartsWith("connected "), timeoutMs: 30000).Split(' ')[1];

        var e = Assert.Throws<CrispException>(() => Dumper.Dump(new DumpOptions { Pid = pid, ImagesDir = Path.Combine(Dir, "img") }));
        output.WriteLine(e.Message);
        Assert.Contains($"process {pid}: fd {fd} (unix stream socket socket:[", e.Message);
        Assert.Contains("outside the dumped tree", e.Message);
        Assert.Contains("--ext-unix-sk", e.Message);
        Assert.True(Alive(pid));
        Assert.Contains("TracerPid:\t0", File.ReadAllText($"/proc/{pid}/status"));
        Assert.False(File.Exists(Path.Combine(Dir, "img", "inventory.img")), "a failed dump must not look complete");
    }

    private static string Get(int port, string path)
    {
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(10) };
        return http.GetStringAsync($"http://127.0.0.1:{port}{path}").GetAwaiter().GetResult();
    }
}
