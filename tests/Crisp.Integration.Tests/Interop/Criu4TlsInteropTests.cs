using System.Globalization;
using Crisp.Checkpoint.Restore;
using Crisp.Integration.Tests.Remote;
using Crisp.Integration.Tests.Support;
using Crisp.Native;
using Crisp.TestSupport;
using Xunit;
using static Crisp.Integration.Tests.Remote.RemoteUtil;

namespace Crisp.Integration.Tests.Interop;

/// <summary>
/// crisp's --tls against CRIU 4.2's (gnutls) on the page-server wire, both ways, with the same
/// certificates (made by the test) and the same options on both tools. Memory is verified by the
/// workload's own checksum sweep after a restore.
/// </summary>
public sealed class Criu4TlsInteropTests
{
    [Criu4Fact]
    public void Crisp_tls_dump_into_a_criu4_tls_page_server_restores_with_crisp()
    {
        using var dir = new TempDir();
        var pki = new TestPki(dir);
        var server = pki.Leaf("server");
        var client = pki.Leaf("client");
        using var w = new Memtouch(dir, mib: 64);
        int port = Crisp.Integration.Tests.Lazy.LoopbackPort.Unused();
        Directory.CreateDirectory(dir["img"]);
        using var ps = Criu4.Start(["page-server", "-D", dir["img"], "--address", "127.0.0.1", "--port", S(port), "-o", "ps.log", "-v4", .. pki.Args(server)]);
        string psLog = Path.Combine(dir["img"], "ps.log");
        try
        {
            CliResult dump = null!;
            Assert.True(Poll.Until(() =>
            {
                dump = CrispCli.Run(dir, ["dump", "-t", S(w.Pid), "-D", dir["img"], "-o", "dump.log", "--page-server", "--address", "127.0.0.1", "--port", S(port), .. pki.Args(client)]);
                return dump.ExitCode == 0 || !dump.Stderr.Contains("onnect");
            }, 20_000), "criu4 page-server never accepted a connection");
            Assert.True(dump.ExitCode == 0, dump + "\ncriu4: " + Poll.ReadFile(psLog));
            Assert.True(ps.WaitForExit(20_000), "criu4 page-server did not finish after the dump closed its connection");
            Assert.True(ps.ExitCode == 0, $"criu4 page-server: exit {ps.ExitCode}: {Criu4.Errors(psLog)}");
            Assert.Contains("TLS handshake completed", Poll.ReadFile(psLog));
        }
        finally
        {
            if (!ps.HasExited) ps.Kill();
            ps.WaitForExit();
        }
        w.Reap();
        var r = Restorer.Restore(new RestoreOptions { ImagesDir = dir["img"] });
        w.Adopt(r.Pid);
        Assert.StartsWith("check ok", w.Check(r.Pid));
    }

    [Criu4Fact]
    public void Criu4_tls_dump_into_a_crisp_tls_page_server_restores_with_criu4()
    {
        using var dir = new TempDir();
        var pki = new TestPki(dir);
        var server = pki.Leaf("server");
        var client = pki.Leaf("client");
        using var w = new Memtouch(dir, mib: 64);
        using (var ps = new BackgroundCrisp(dir, "ps", ["page-server", "-D", dir["img"], "--address", "127.0.0.1", "--port", "0", "-v4", .. pki.Args(server)]))
        {
            int port = ps.Port();
            var (code, _) = Criu4.Run(TimeSpan.FromSeconds(60), ["dump", "-t", S(w.Pid), "-D", dir["img"], "-o", "dump.log", "-v4",
                "--page-server", "--address", "127.0.0.1", "--port", S(port), .. pki.Args(client)]);
            string log = Path.Combine(dir["img"], "dump.log");
            Assert.True(code == 0, $"criu4 dump --page-server --tls: exit {code}: {Criu4.Errors(log)}\n{ps.Output}");
            Assert.Contains("TLS handshake completed", Poll.ReadFile(log));
            Assert.True(Poll.Until(() => File.Exists(Path.Combine(dir["img"], $"pagemap-{w.Pid}.img")), 10_000), ps.Output);
            ps.Terminate();
        }
        w.Reap();
        var (rc, _) = Criu4.Run(TimeSpan.FromSeconds(60), "restore", "-D", dir["img"], "-d", "-o", "restore.log", "-v4", "--pidfile", dir["pid"]);
        Assert.True(rc == 0, $"criu4 restore: exit {rc}: {Criu4.Errors(Path.Combine(dir["img"], "restore.log"))}");
        int pid = int.Parse(File.ReadAllText(dir["pid"]).Trim(), CultureInfo.InvariantCulture);
        try { Assert.StartsWith("check ok", w.Check(pid)); }
        finally { LibC.kill(pid, LibC.SIGKILL); }
    }

    [Criu4Fact]
    public void Crisp_tls_lazy_pages_restores_from_a_criu4_tls_lazy_page_server()
    {
        using var pipes = new Criu4.PipeMaxSize();
        using var dir = new TempDir();
        var pki = new TestPki(dir);
        var server = pki.Leaf("server");
        var client = pki.Leaf("client");
        using var w = new Memtouch(dir, mib: 64);
        var dump = CrispCli.Run(dir, "dump", "-t", S(w.Pid), "-D", dir["img"]);
        Assert.True(dump.ExitCode == 0, dump.ToString());
        w.Reap();
        int port = Crisp.Integration.Tests.Lazy.LoopbackPort.Unused();
        using var ps = Criu4.Start(["page-server", "--lazy-pages", "-D", dir["img"], "--address", "127.0.0.1", "--port", S(port), "-o", "ps.log", "-v4", .. pki.Args(server)]);
        string psLog = Path.Combine(dir["img"], "ps.log");
        try
        {
            Assert.True(Poll.Until(() => Poll.ReadFile(psLog).Contains("Starting page server") || ps.HasExited, 20_000), "criu4 page-server --lazy-pages does not listen: " + Poll.ReadFile(psLog));
            string work = dir["work"];
            Directory.CreateDirectory(work);
            using var lazy = new BackgroundCrisp(dir, "lazy", ["lazy-pages", "-D", dir["img"], "-W", work, "--page-server", "--address", "127.0.0.1", "--port", S(port), .. pki.Args(client)]);
            Assert.True(Poll.Until(() => File.Exists(Path.Combine(work, "lazy-pages.socket")) || lazy.Exited, 30_000), lazy.Output);
            var r = Restorer.Restore(new RestoreOptions { ImagesDir = dir["img"], WorkDir = work, Lazy = true });
            w.Adopt(r.Pid);
            Assert.StartsWith("check ok", w.Check(r.Pid));
            Assert.True(lazy.WaitExit(TimeSpan.FromSeconds(60)) == 0, lazy.Output + "\ncriu4: " + Criu4.Errors(psLog));
            Assert.Contains("TLS handshake completed", Poll.ReadFile(psLog));
        }
        finally
        {
            if (!ps.HasExited) ps.Kill();
            ps.WaitForExit();
        }
    }
}
