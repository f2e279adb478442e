using System.Net;
using Crisp.Checkpoint.Dump;
using Crisp.Images;
using Crisp.Integration.Tests.Support;
using Crisp.Migration;
using Crisp.Native;
using Crisp.TestSupport;
using Crisp.PageServer.Client;
using Crisp.PageServer.Protocol;
using Xunit;
using static Crisp.Integration.Tests.Remote.RemoteUtil;

namespace Crisp.Integration.Tests.Remote;

/// <summary>
/// Post-copy across a broken connection: a relay between the destination's lazy-pages daemon and
/// the source (CuttingProxy) resets the connections mid-transfer; the daemon reconnects, asks
/// again for what was in flight, and the process's memory verifies. When the source is really
/// gone the rest is poisoned after --ps-reconnect-timeout: SIGBUS, a clear message, no hang.
/// </summary>
public class ReconnectTests
{
    private const long MiB = 1 << 20;

    [Fact]
    public void Lazy_restore_from_a_lazy_dump_survives_two_cut_connections_and_its_memory_verifies()
    {
        using var dir = new TempDir();
        using var w = new Memtouch(dir, mib: 64);
        using var dump = new BackgroundCrisp(dir, "dump", "dump", "-t", S(w.Pid), "-D", dir["src"], "--lazy-pages", "--address", "127.0.0.1", "--port", "0", "-v4");
        int port = dump.Port("lazy page server listening on");
        using var proxy = new CuttingProxy(() => new IPEndPoint(IPAddress.Loopback, port), [12 * MiB, 36 * MiB]);
        CopyImages(dir["src"], dir["dst"]);
        Assert.True(File.Exists(Path.Combine(dir["dst"], CrispHello.FileName)), "the lazy dump wrote no session id");

        using var lazy = new BackgroundCrisp(dir, "lazy", "lazy-pages", "-D", dir["dst"], "--page-server", "--address", "127.0.0.1",
            "--port", S(proxy.Port), "--ps-reconnect-timeout", "20");
        Assert.True(Poll.Until(() => File.Exists(Path.Combine(dir["dst"], "lazy-pages.socket")) || lazy.Exited, 30_000), lazy.Output);
        using var restore = new BackgroundCrisp(dir, "restore", BackgroundCrisp.InNewPidNs, ["restore", "-D", dir["dst"], "--lazy-pages", "--pidfile", dir["restored.pid"]]);
        int moved = WaitOuterPid(w.Pid, restore, dir["restored.pid"]);
        w.Adopt(moved);

        Assert.True(lazy.WaitExit(TimeSpan.FromSeconds(90)) == 0, lazy.Output + dump.Output);
        Assert.Equal(2, proxy.Cuts);
        Assert.True(proxy.Connections >= 3, $"{proxy.Connections} connections: the daemon did not reconnect");
        Assert.True(Poll.ReadFile(lazy.Stderr).Contains("reconnected after"), lazy.Output);
        Assert.StartsWith("check ok", w.Check(moved));
        Assert.True(dump.WaitExit(TimeSpan.FromSeconds(60)) == 0, dump.Output);
        Assert.True(Gone(w.Pid), "the source is still alive");
        long n = w.Ticks().Last().N;
        Assert.True(Poll.Until(() => w.Ticks().Last().N > n + 3), "the restored process does not tick");
    }

    [Fact]
    public void Lazy_restore_whose_source_is_killed_mid_transfer_ends_with_SIGBUS_and_a_clear_message_never_a_hang()
    {
        using var dir = new TempDir();
        using var w = new Memtouch(dir, mib: 64);
        using var dump = new BackgroundCrisp(dir, "dump", "dump", "-t", S(w.Pid), "-D", dir["src"], "--lazy-pages", "--address", "127.0.0.1", "--port", "0");
        int port = dump.Port("lazy page server listening on");
        // at 8 MiB the source dies (crisp dump, SIGKILL: nothing of it is left to reconnect to)
        using var proxy = new CuttingProxy(() => new IPEndPoint(IPAddress.Loopback, port), [8 * MiB], cut: false);
        proxy.Crossed += _ => LibC.kill(dump.Pid, LibC.SIGKILL);
        CopyImages(dir["src"], dir["dst"]);

        using var lazy = new BackgroundCrisp(dir, "lazy", "lazy-pages", "-D", dir["dst"], "--page-server", "--address", "127.0.0.1",
            "--port", S(proxy.Port), "--ps-reconnect-timeout", "3");
        Assert.True(Poll.Until(() => File.Exists(Path.Combine(dir["dst"], "lazy-pages.socket")) || lazy.Exited, 30_000), lazy.Output);
        using var restore = new BackgroundCrisp(dir, "restore", BackgroundCrisp.InNewPidNs, ["restore", "-D", dir["dst"], "--lazy-pages", "--pidfile", dir["restored.pid"]]);
        int moved = WaitOuterPid(w.Pid, restore, dir["restored.pid"]);
        w.Adopt(moved);

        Assert.True(lazy.WaitExit(TimeSpan.FromSeconds(60)) == 1, lazy.Output);
        Assert.Equal(128 + LibC.SIGKILL, dump.WaitExit(TimeSpan.FromSeconds(10)));
        string err = Poll.ReadFile(lazy.Stderr);
        Assert.True(err.Contains("could not be re-established within 3 s", StringComparison.Ordinal), err);
        Assert.True(err.Contains("touching them raises SIGBUS", StringComparison.Ordinal), err);
        // the process touches every page: the first one it never got kills it
        LibC.kill(moved, LibC.SIGUSR1);
        Assert.Equal(128 + 7, restore.WaitExit(TimeSpan.FromSeconds(60))); // SIGBUS
        Assert.DoesNotContain(w.Lines(), l => l.StartsWith("check", StringComparison.Ordinal));
    }

    [Fact]
    public void Migration_survives_two_cut_page_connections_and_its_memory_verifies()
    {
        using var dir = new TempDir();
        using var w = new Memtouch(dir, mib: 64);
        using var agent = new BackgroundCrisp(dir, "agent", BackgroundCrisp.InNewPidNs, ["agent", "--listen", "127.0.0.1:0", "-W", dir.Path, "-o", "agent.log", "-v4"]);
        int port = agent.Port();
        IPEndPoint? pages = null;
        using var proxy = new CuttingProxy(() => pages!, [12 * MiB, 36 * MiB]);
        // The agent is told to fetch through the relay, as through a NAT.
        var result = MigrationSource.Run(new MigrationRequest
        {
            Pid = w.Pid,
            Agent = new IPEndPoint(IPAddress.Loopback, port),
            HandleSignals = false,
            TempDir = dir.Path,
            Advertise = ep => { pages = ep; return proxy.EndPoint; },
        });
        string log = Poll.ReadFile(dir["agent.log"]);
        Assert.True(result.Stats.Succeeded, $"{result.Stats.Outcome}\n{agent.Output}\n{log}");
        Assert.Equal(2, proxy.Cuts);
        Assert.Contains("reconnected after", log);
        int moved = 0;
        Assert.True(Poll.Until(() => (moved = OuterPid(w.Pid)) != 0), "no migrated process in the agent's namespace");
        w.Adopt(moved);
        Assert.StartsWith("check ok", w.Check(moved));
    }

    [Fact]
    public void A_lazy_dump_serves_only_its_first_destination_again_and_refuses_others()
    {
        using var dir = new TempDir();
        using var w = new Memtouch(dir, mib: 4);
        Task reader = Task.CompletedTask;
        var server = new LazyDumpServer(new LazyDumpServerOptions
        {
            EndPoint = new IPEndPoint(IPAddress.Loopback, 0),
            HandleSignals = false,
            Listening = ep => reader = Task.Run(() =>
            {
                ulong session = CrispHello.ReadSession(dir["img"]) ?? throw new InvalidOperationException("no session id in the images");
                using var first = new RemotePageSource(ep, new RemotePageSourceOptions { Hello = new CrispHello(session, 1) });
                using var other = new RemotePageSource(ep, new RemotePageSourceOptions { Hello = new CrispHello(session, 2) });
                using var stranger = new RemotePageSource(ep, new RemotePageSourceOptions { Hello = new CrispHello(session ^ 0x5a5a, 1) });
                using var plain = new RemotePageSource(ep);
                var (addr, sum) = w.Buffers[0];
                var buf = new byte[w.Mib << 20];
                // a hello for another dump is refused before the first GET
                var e = Assert.Throws<PageSourceException>(() => stranger.OpenChannel());
                Assert.IsType<PageServerRefusedException>(e.InnerException);
                using (var ch = first.OpenChannel()) ch.Read(w.Pid, addr, buf[..4096]); // binds the tree
                e = Assert.Throws<PageSourceException>(() => other.OpenChannel());
                Assert.Contains("another destination", e.Message);
                using (var pc = plain.OpenChannel())
                    Assert.Throws<PageSourceException>(() => pc.Read(w.Pid, addr, buf.AsSpan(0, 4096)));
                // the first destination, on a new connection, is served everything
                using var again = first.OpenChannel();
                again.Read(w.Pid, addr, buf);
                Assert.Equal(sum, Memtouch.Checksum(buf));
                using var pagemap = new ImageDir(dir["img"]).OpenPagemap(w.Pid);
                var chunk = new byte[1 << 20];
                foreach (var r in pagemap.Runs.Where(r => r.IsLazy))
                    for (ulong p = r.Vaddr; p < r.End;)
                    {
                        int n = (int)Math.Min((ulong)chunk.Length, r.End - p);
                        again.Read(w.Pid, p, chunk.AsSpan(0, n));
                        p += (ulong)n;
                    }
            }),
        });
        var result = LazyDump.Run(new DumpOptions { Pid = w.Pid, ImagesDir = dir["img"] }, server);
        Assert.True(Poll.Until(() => reader.IsCompleted), "the reader never finished");
        Assert.Null(reader.Exception);
        Assert.True(result.Succeeded, result.Outcome);
        Assert.StartsWith("all ", result.Outcome);
    }
}
