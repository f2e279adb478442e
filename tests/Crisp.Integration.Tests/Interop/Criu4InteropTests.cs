using System.Globalization;
using Crisp.Checkpoint.Restore;
using Crisp.Integration.Tests.Support;
using Crisp.Native;
using Crisp.TestSupport;
using Xunit;
using Xunit.Abstractions;
using static Crisp.Integration.Tests.Remote.RemoteUtil;

namespace Crisp.Integration.Tests.Interop;

/// <summary>
/// crisp and CRIU 4.2 on either side of a checkpoint: one tool dumps, the other restores, and
/// a 64 MiB memtouch verifies every buffer afterwards (its own checksum sweep).
/// </summary>
public sealed class Criu4InteropTests(ITestOutputHelper output)
{
    /// <summary>A memtouch restored by CRIU: its parent is gone (criu4 restore -d), so it is killed but not reaped here.</summary>
    private static void Kill(int pid) => LibC.kill(pid, LibC.SIGKILL);

    [Criu4Fact]
    public void Crisp_dump_restores_with_criu4()
    {
        using var dir = new TempDir();
        using var w = new Memtouch(dir, mib: 64);
        var dump = CrispCli.Run(dir, "dump", "-t", S(w.Pid), "-D", dir["img"], "-o", "dump.log");
        Assert.True(dump.ExitCode == 0, dump.ToString());
        w.Reap();

        var (code, outText) = Criu4.Run(TimeSpan.FromSeconds(60), "restore", "-D", dir["img"], "-d", "-o", "restore.log", "-v4", "--pidfile", dir["pid"]);
        output.WriteLine(outText);
        Assert.True(code == 0, $"criu4 restore: exit {code}: {Criu4.Errors(Path.Combine(dir["img"], "restore.log"))}");
        int pid = int.Parse(File.ReadAllText(dir["pid"]).Trim(), CultureInfo.InvariantCulture);
        try
        {
            Assert.Equal(w.Pid, pid);
            Assert.StartsWith("check ok", w.Check(pid));
        }
        finally { Kill(pid); }
    }

    [Criu4Fact]
    public void Criu4_dump_restores_with_crisp()
    {
        using var dir = new TempDir();
        using var w = new Memtouch(dir, mib: 64);
        Directory.CreateDirectory(dir["img"]);
        var (code, _) = Criu4.Run(TimeSpan.FromSeconds(60), "dump", "-t", S(w.Pid), "-D", dir["img"], "-o", "dump.log", "-v2");
        Assert.True(code == 0, $"criu4 dump: exit {code}: {Criu4.Errors(Path.Combine(dir["img"], "dump.log"))}");
        w.Reap();

        var r = Restorer.Restore(new RestoreOptions { ImagesDir = dir["img"] });
        w.Adopt(r.Pid);
        Assert.Equal(w.Pid, r.Pid);
        Assert.StartsWith("check ok", w.Check(r.Pid));
    }

    [Criu4Fact]
    public void Crisp_dump_into_a_criu4_page_server_restores_with_crisp()
    {
        using var dir = new TempDir();
        using var w = new Memtouch(dir, mib: 64);
        int port = Crisp.Integration.Tests.Lazy.LoopbackPort.Unused();
        Directory.CreateDirectory(dir["img"]);
        using var server = Criu4.Start("page-server", "-D", dir["img"], "--address", "127.0.0.1", "--port", S(port), "-o", "ps.log", "-v2");
        try
        {
            CliResult dump = null!;
            // criu4 page-server is listening once the dump can connect.
            Assert.True(Poll.Until(() =>
            {
                dump = CrispCli.Run(dir, "dump", "-t", S(w.Pid), "-D", dir["img"], "-o", "dump.log", "--page-server", "--address", "127.0.0.1", "--port", S(port));
                return dump.ExitCode == 0 || !dump.Stderr.Contains("onnect");
            }, 20_000), "criu4 page-server never accepted a connection");
            Assert.True(dump.ExitCode == 0, dump.ToString());
            Assert.True(server.WaitForExit(20_000), "criu4 page-server did not finish after the dump closed its connection");
            Assert.True(server.ExitCode == 0, $"criu4 page-server: exit {server.ExitCode}: {Criu4.Errors(Path.Combine(dir["img"], "ps.log"))}");
        }
        finally
        {
            if (!server.HasExited) server.Kill();
            server.WaitForExit();
        }
        w.Reap();
        Assert.True(File.Exists(Path.Combine(dir["img"], $"pagemap-{w.Pid}.img")), "criu4 page-server wrote no pagemap");

        var r = Restorer.Restore(new RestoreOptions { ImagesDir = dir["img"] });
        w.Adopt(r.Pid);
        Assert.StartsWith("check ok", w.Check(r.Pid));
    }

    [Criu4Fact]
    public void Criu4_dump_into_a_crisp_page_server_restores_with_criu4()
    {
        using var dir = new TempDir();
        using var w = new Memtouch(dir, mib: 64);
        using (var server = new Crisp.Integration.Tests.Remote.BackgroundCrisp(dir, "ps", "page-server", "-D", dir["img"], "--address", "127.0.0.1", "--port", "0"))
        {
            int port = server.Port();
            var (code, _) = Criu4.Run(TimeSpan.FromSeconds(60), "dump", "-t", S(w.Pid), "-D", dir["img"], "-o", "dump.log", "-v2",
                "--page-server", "--address", "127.0.0.1", "--port", S(port));
            Assert.True(code == 0, $"criu4 dump --page-server: exit {code}: {Criu4.Errors(Path.Combine(dir["img"], "dump.log"))}\n{server.Output}");
            Assert.True(Poll.Until(() => File.Exists(Path.Combine(dir["img"], $"pagemap-{w.Pid}.img")), 10_000), server.Output);
            server.Terminate();
        }
        w.Reap();

        var (rc, outText) = Criu4.Run(TimeSpan.FromSeconds(60), "restore", "-D", dir["img"], "-d", "-o", "restore.log", "-v4", "--pidfile", dir["pid"]);
        output.WriteLine(outText);
        Assert.True(rc == 0, $"criu4 restore: exit {rc}: {Criu4.Errors(Path.Combine(dir["img"], "restore.log"))}");
        int pid = int.Parse(File.ReadAllText(dir["pid"]).Trim(), CultureInfo.InvariantCulture);
        try { Assert.StartsWith("check ok", w.Check(pid)); }
        finally { Kill(pid); }
    }

    [Criu4Fact]
    public void Crisp_lazy_pages_serves_a_criu4_lazy_restore()
    {
        using var pipes = new Criu4.PipeMaxSize();
        using var dir = new TempDir();
        using var w = new Memtouch(dir, mib: 64);
        Directory.CreateDirectory(dir["img"]);
        Directory.CreateDirectory(dir["work"]);
        var (code, _) = Criu4.Run(TimeSpan.FromSeconds(60), "dump", "-t", S(w.Pid), "-D", dir["img"], "-o", "dump.log", "-v2");
        Assert.True(code == 0, $"criu4 dump: exit {code}: {Criu4.Errors(Path.Combine(dir["img"], "dump.log"))}");
        w.Reap();

        using var daemon = new Crisp.Integration.Tests.Lazy.LazyDaemon(dir["img"], dir.Path, dir["work"]);
        var (rc, outText) = Criu4.Run(TimeSpan.FromSeconds(60), "restore", "-D", dir["img"], "-W", dir["work"], "--lazy-pages", "-d",
            "-o", "restore.log", "-v4", "--pidfile", dir["pid"]);
        output.WriteLine(outText);
        Assert.True(rc == 0, $"criu4 restore --lazy-pages: exit {rc}: {Criu4.Errors(Path.Combine(dir["work"], "restore.log"))}\n{daemon.Stderr}");
        int pid = int.Parse(File.ReadAllText(dir["pid"]).Trim(), CultureInfo.InvariantCulture);
        try
        {
            Assert.StartsWith("check ok", w.Check(pid));
            Assert.True(daemon.WaitExit() == 0, daemon.Stderr);
        }
        finally { Kill(pid); }
    }

    [Criu4Fact]
    public void Criu4_lazy_pages_serves_a_crisp_lazy_restore()
    {
        using var pipes = new Criu4.PipeMaxSize();
        using var dir = new TempDir();
        using var w = new Memtouch(dir, mib: 64);
        Directory.CreateDirectory(dir["work"]);
        var dump = CrispCli.Run(dir, "dump", "-t", S(w.Pid), "-D", dir["img"], "-o", "dump.log");
        Assert.True(dump.ExitCode == 0, dump.ToString());
        w.Reap();

        using var daemon = Criu4.Start("lazy-pages", "-D", dir["img"], "-W", dir["work"], "-o", "lazy-pages.log", "-v4");
        try
        {
            string socket = Path.Combine(dir["work"], "lazy-pages.socket");
            Assert.True(Poll.Until(() => File.Exists(socket) || daemon.HasExited, 30_000), "criu4 lazy-pages never made its socket");
            Assert.False(daemon.HasExited, $"criu4 lazy-pages exited: {Criu4.Errors(Path.Combine(dir["work"], "lazy-pages.log"))}");
            var r = Restorer.Restore(new RestoreOptions { ImagesDir = dir["img"], WorkDir = dir["work"], Lazy = true });
            w.Adopt(r.Pid);
            Assert.StartsWith("check ok", w.Check(r.Pid));
            Assert.True(daemon.WaitForExit(60_000), "criu4 lazy-pages did not finish once every page was in");
            Assert.True(daemon.ExitCode == 0, $"criu4 lazy-pages: exit {daemon.ExitCode}: {Criu4.Errors(Path.Combine(dir["work"], "lazy-pages.log"))}");
        }
        finally
        {
            if (!daemon.HasExited) daemon.Kill();
            daemon.WaitForExit();
        }
    }
}
