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

namespace Crisp.Integration.Tests.Sockets;

/// <summary>
/// AF_PACKET sockets (tests/workloads/packetsock.c), judged by the program itself: bindings,
/// PACKET_* options, memberships and fanout read back as they were set, and the rx ring it had
/// mapped, at the same address, receives a datagram it sends over lo after the restore (eager and
/// lazy; and restored by CRIU 4.2 from crisp's images). One with an option CRIU's image cannot
/// hold is refused naming it, and the program goes on.
/// </summary>
public sealed class PacketSocketTests(ITestOutputHelper output) : LiveProcessTest("packet")
{
    private (int Pid, string Log, ulong Ring) Start(string name)
    {
        string log = Path.Combine(Dir, name + ".log");
        int pid = Track(SpawnLogged(log, Gcc.Workload("packetsock")));
        string ready = WaitForLine(log, l => l.StartsWith("ready ") || l.StartsWith("BAD"));
        Assert.StartsWith("ready 0x", ready);
        // The checks pass on the live program: what is judged after the restore is the restore.
        Assert.Equal("check ok", Check(pid, log));
        return (pid, log, Convert.ToUInt64(ready[6..], 16));
    }

    private string Check(int pid, string log)
    {
        int before = Lines(log).Length;
        LibC.kill(pid, LibC.SIGUSR1);
        string check = WaitForLine(log, l => l.StartsWith("check ") || l.StartsWith("BAD"), skip: before, timeoutMs: 15000);
        output.WriteLine(check);
        return check;
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Packet_sockets_keep_their_bindings_options_memberships_fanout_and_mapped_ring(bool lazy)
    {
        var (pid, log, ring) = Start(lazy ? "lazy" : "eager");
        string images = Path.Combine(Dir, lazy ? "img-lazy" : "img");
        Dumper.Dump(new DumpOptions { Pid = pid, ImagesDir = images });
        Reap(pid);

        Crit.DecodeNode(Path.Combine(images, ImageDir.FilesName));
        Crit.DecodeNode(Path.Combine(images, ImageDir.MmName(pid)));
        var dir = new ImageDir(images);
        var packets = dir.ReadFiles().Where(f => f.Type == FdTypes.Packetsk).Select(f => f.Psk).ToList();
        Assert.Equal(4, packets.Count);
        var raw = Assert.Single(packets, p => p.Type == 3);
        Assert.Equal(1u, raw.Version);                     // TPACKET_V2
        Assert.True(raw.AuxData);
        Assert.Equal(4u, raw.RxRing.BlockNr);
        Assert.Equal(1u, raw.TxRing.BlockNr);
        var dgram = Assert.Single(packets, p => p.Type == 2);
        Assert.Equal(8u, dgram.Reserve);
        Assert.Equal(7u, dgram.Fanout);
        Assert.Equal(2, packets.Count(p => p.Type == SocketDumpConstants.SockPacket));
        var vma = Assert.Single(dir.ReadMm(pid).Vmas, v => (v.Status & VmaStatus.VMA_AREA_SOCKET) != 0);
        Assert.Equal(ring, vma.Start);
        Assert.Equal((ulong)raw.Id, vma.Shmid);
        Assert.Equal((uint)LibC.O_RDWR, vma.Fdflags);

        LazyDaemon? daemon = lazy ? new LazyDaemon(images, Dir) : null;
        try
        {
            var r = Restorer.Restore(new RestoreOptions { ImagesDir = images, Lazy = lazy });
            Assert.Equal(pid, r.Pid);
            Assert.Equal("check ok", Check(pid, log));
        }
        finally { daemon?.Dispose(); }
    }

    [Criu4Fact]
    public void Criu4_restores_crisps_images_of_packet_sockets_and_their_ring()
    {
        var (pid, log, _) = Start("interop");
        string images = Path.Combine(Dir, "img-crisp");
        Dumper.Dump(new DumpOptions { Pid = pid, ImagesDir = images });
        Reap(pid);
        var (code, text) = Criu4.Run(TimeSpan.FromSeconds(60), "restore", "-D", images, "-d", "-o", "restore.log", "-v4");
        output.WriteLine(text);
        Assert.True(code == 0, $"criu4 restore: exit {code}: {Criu4.Errors(Path.Combine(images, "restore.log"))}");
        // criu4 restore -d leaves the tree to init: killed by pid, not reaped here.
        try { Assert.Equal("check ok", Check(pid, log)); }
        finally { LibC.kill(pid, LibC.SIGKILL); }
    }

    [Fact]
    public void A_packet_socket_with_an_option_criu_images_cannot_hold_is_refused_naming_it_and_the_program_goes_on()
    {
        string log = Path.Combine(Dir, "bypass.log");
        // PACKET_QDISC_BYPASS (20): packet_sock_entry has no field for it.
        string script = "import socket,time,signal\ns=socket.socket(socket.AF_PACKET,socket.SOCK_RAW,0)\ns.setsockopt(263,20,1)\n" +
                        "def on(sig,f): print('alive',s.getsockopt(263,20),flush=True)\nsignal.signal(signal.SIGUSR1,on)\n" +
                        "print('ready',s.fileno(),flush=True)\nwhile True: time.sleep(0.05)\n";
        int pid = Track(SpawnLogged(log, "/usr/bin/python3", "-c", script));
        string fd = WaitForLine(log, l => l.StartsWith("ready "), timeoutMs: 30000).Split(' ')[1];
        var e = Assert.Throws<CrispException>(() => Dumper.Dump(new DumpOptions { Pid = pid, ImagesDir = Path.Combine(Dir, "img") }));
        output.WriteLine(e.Message);
        Assert.Contains($"process {pid}: fd {fd} (socket:[", e.Message);
        Assert.Contains("packet socket (raw) with PACKET_QDISC_BYPASS set", e.Message);
        Assert.Contains("TracerPid:\t0", File.ReadAllText($"/proc/{pid}/status"));
        LibC.kill(pid, LibC.SIGUSR1);
        Assert.Equal("alive 1", WaitForLine(log, l => l.StartsWith("alive")));
    }

    private static class SocketDumpConstants
    {
        public const uint SockPacket = 10;   // SOCK_PACKET
    }
}
