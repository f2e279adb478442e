using Crisp.Checkpoint.Dump;
using Crisp.Checkpoint.Restore;
using Crisp.Native;
using Xunit;
using Xunit.Abstractions;
using static Crisp.TestSupport.TestProcesses;

namespace Crisp.Integration.Tests.Sockets;

/// <summary>
/// Netlink sockets, judged by the program holding them: one bound to its own port id and a
/// multicast group still gets what another socket of the tree sends to that port after the
/// restore; one with a netlink option crisp cannot keep is refused naming it, and the program goes on.
/// </summary>
public sealed class NetlinkSocketTests(ITestOutputHelper output) : LiveProcessTest("netlink")
{
    // NETLINK_USERSOCK (2): sockets of user space talking to each other through the kernel.
    private const string Prelude =
        "import socket,os,time,signal\n" +
        "r=socket.socket(socket.AF_NETLINK,socket.SOCK_RAW,2)\nr.bind((0,1<<4))\n" +
        "s=socket.socket(socket.AF_NETLINK,socket.SOCK_RAW,2)\n";

    [Fact]
    public void A_bound_netlink_socket_keeps_its_port_id_and_group_and_gets_messages_after_restore()
    {
        string log = Path.Combine(Dir, "nl.log");
        string script = Prelude +
                        "def on(sig,f):\n  s.sendto(b'hello',(r.getsockname()[0],0))\n" +
                        "  print('got',r.recv(100).decode(),r.getsockname()[0]==port,r.getsockname()[1],flush=True)\n" +
                        "signal.signal(signal.SIGUSR1,on)\nport=r.getsockname()[0]\nprint('ready',port,flush=True)\n" +
                        "while True: time.sleep(0.05)\n";
        int pid = SpawnLogged(log, "/usr/bin/python3", "-c", script);
        Pids.Add(pid);
        WaitForLine(log, l => l.StartsWith("ready "), timeoutMs: 30000);
        string images = Path.Combine(Dir, "img");
        Dumper.Dump(new DumpOptions { Pid = pid, ImagesDir = images });
        unsafe { int st; LibC.waitpid(pid, &st, 0); }

        Restorer.Restore(new RestoreOptions { ImagesDir = images, Detached = true });
        LibC.kill(pid, LibC.SIGUSR1);
        string got = WaitForLine(log, l => l.StartsWith("got "), timeoutMs: 15000);
        output.WriteLine(got);
        Assert.Equal("got hello True 16", got);
    }

    [Fact]
    public void A_netlink_socket_with_an_option_crisp_cannot_keep_is_refused_naming_it_and_the_program_goes_on()
    {
        string log = Path.Combine(Dir, "ack.log");
        string script = Prelude + "r.setsockopt(270,11,1)\nprint('ready',r.fileno(),flush=True)\n" +
                        "while True: time.sleep(0.05)\n";
        int pid = SpawnLogged(log, "/usr/bin/python3", "-c", script);
        Pids.Add(pid);
        string fd = WaitForLine(log, l => l.StartsWith("ready "), timeoutMs: 30000).Split(' ')[1];
        var e = Assert.Throws<CrispException>(() => Dumper.Dump(new DumpOptions { Pid = pid, ImagesDir = Path.Combine(Dir, "img") }));
        output.WriteLine(e.Message);
        Assert.Contains($"process {pid}: fd {fd} (socket:[", e.Message);
        Assert.Contains("netlink socket (protocol 2) with NETLINK_EXT_ACK set", e.Message);
        Assert.True(Directory.Exists($"/proc/{pid}"));
        Assert.Contains("TracerPid:\t0", File.ReadAllText($"/proc/{pid}/status"));
    }
}
