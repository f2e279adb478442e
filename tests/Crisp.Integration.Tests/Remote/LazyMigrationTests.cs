using Crisp.Integration.Tests.Support;
using Crisp.Native;
using Crisp.TestSupport;
using Xunit;
using static Crisp.Integration.Tests.Remote.RemoteUtil;

namespace Crisp.Integration.Tests.Remote;

/// <summary>
/// Lazy restore with pages over TCP, on one machine: the restore runs in a new pid namespace
/// (unshare) so it can take the pid the frozen source still holds, as it would on another host.
/// </summary>
public class LazyMigrationTests
{
    [Fact]
    public void Lazy_migration_of_memtouch_verifies_on_the_destination_and_the_source_is_gone()
    {
        using var dir = new TempDir();
        using var w = new Memtouch(dir, mib: 64);
        using var dump = new BackgroundCrisp(dir, "dump", "dump", "-t", S(w.Pid), "-D", dir["src"], "--lazy-pages", "--address", "127.0.0.1", "--port", "0", "-v4");
        int port = dump.Port("lazy page server listening on");
        CopyImages(dir["src"], dir["dst"]);

        using var lazy = new BackgroundCrisp(dir, "lazy", "lazy-pages", "-D", dir["dst"], "--page-server", "--address", "127.0.0.1", "--port", S(port));
        Assert.True(Poll.Until(() => File.Exists(Path.Combine(dir["dst"], "lazy-pages.socket")) || lazy.Exited, 30_000), lazy.Output);
        using var restore = new BackgroundCrisp(dir, "restore", BackgroundCrisp.InNewPidNs, ["restore", "-D", dir["dst"], "--lazy-pages", "--pidfile", dir["restored.pid"]]);
        int moved = WaitOuterPid(w.Pid, restore, dir["restored.pid"]);
        w.Adopt(moved);

        Assert.StartsWith("check ok", w.Check(moved));
        Assert.True(dump.WaitExit(TimeSpan.FromSeconds(60)) == 0, dump.Output);
        Assert.True(Gone(w.Pid), "the source is still alive");
        Assert.True(lazy.WaitExit(TimeSpan.FromSeconds(60)) == 0, lazy.Output);
        long n = w.Ticks().Last().N;
        Assert.True(Poll.Until(() => w.Ticks().Last().N > n + 3), "the migrated process does not tick");
    }

    [Fact]
    public void Page_server_serves_three_lazy_restores_in_a_row_from_the_same_images()
    {
        using var dir = new TempDir();
        using var w = new Memtouch(dir, mib: 16);
        var d = CrispCli.Run(dir, "dump", "-t", S(w.Pid), "-D", dir["img"]);
        Assert.True(d.ExitCode == 0, d.ToString());
        using var server = new BackgroundCrisp(dir, "ps", "page-server", "--lazy-pages", "-D", dir["img"], "--address", "127.0.0.1", "--port", "0");
        int port = server.Port();
        for (int round = 0; round < 3; round++)
        {
            string work = dir[$"work{round}"];
            Directory.CreateDirectory(work);
            using var lazy = new BackgroundCrisp(dir, $"lazy{round}", "lazy-pages", "-D", dir["img"], "-W", work, "--page-server", "--address", "127.0.0.1", "--port", S(port), "-v4", "-o", "lazy.log");
            Assert.True(Poll.Until(() => File.Exists(Path.Combine(work, "lazy-pages.socket")) || lazy.Exited, 30_000), lazy.Output);
            using var restore = new BackgroundCrisp(dir, $"restore{round}", BackgroundCrisp.InNewPidNs, ["restore", "-D", dir["img"], "-W", work, "--lazy-pages", "--pidfile", Path.Combine(work, "restored.pid")]);
            int pid;
            try { pid = WaitOuterPid(w.Pid, restore, Path.Combine(work, "restored.pid")); }
            catch (TimeoutException e) { throw new TimeoutException($"round {round}: {e.Message}\nrestore exit: {restore.WaitExit(TimeSpan.FromSeconds(5))}\nlazy-pages: {lazy.Output}\n{Poll.ReadFile(Path.Combine(work, "lazy.log"))}"); }
            w.Adopt(pid);
            Assert.StartsWith("check ok", w.Check(pid));
            Assert.True(lazy.WaitExit(TimeSpan.FromSeconds(60)) == 0, lazy.Output);
            restore.Terminate(LibC.SIGKILL); // ends the namespace and the restored process with it
            restore.WaitExit(TimeSpan.FromSeconds(10));
            Assert.True(Poll.Until(() => Gone(pid)), $"round {round}: restored process outlived its namespace");
        }
        Assert.False(server.Exited, "the page server stopped after serving");
    }

    [Fact]
    public void Page_server_killed_mid_transfer_ends_the_destination_with_a_clear_message_never_a_hang()
    {
        using var dir = new TempDir();
        using var w = new Memtouch(dir, mib: 64);
        var d = CrispCli.Run(dir, "dump", "-t", S(w.Pid), "-D", dir["img"]);
        Assert.True(d.ExitCode == 0, d.ToString());
        using var server = new BackgroundCrisp(dir, "ps", "page-server", "--lazy-pages", "-D", dir["img"], "--address", "127.0.0.1", "--port", "0");
        int port = server.Port();
        string work = dir["work"];
        Directory.CreateDirectory(work);
        using var lazy = new BackgroundCrisp(dir, "lazy", "lazy-pages", "-D", dir["img"], "-W", work, "--page-server", "--address", "127.0.0.1", "--port", S(port));
        Assert.True(Poll.Until(() => File.Exists(Path.Combine(work, "lazy-pages.socket")) || lazy.Exited, 30_000), lazy.Output);
        // The daemon is connected; the page server dies before it delivered anything.
        server.Terminate(LibC.SIGKILL);
        server.WaitExit(TimeSpan.FromSeconds(10));
        using var restore = new BackgroundCrisp(dir, "restore", BackgroundCrisp.InNewPidNs, ["restore", "-D", dir["img"], "-W", work, "--lazy-pages"]);

        // Either the restore itself needs a page (the kernel reads the rseq area while crisp
        // registers it) and fails cleanly, killing what it made; or the process runs, touches
        // its memory and dies by SIGBUS (poisoned) or SIGKILL. Never a hang, never wrong data.
        int code = restore.WaitExit(TimeSpan.FromSeconds(60));
        Assert.True(lazy.WaitExit(TimeSpan.FromSeconds(30)) != 0, lazy.Output);
        Assert.Contains("page server", Poll.ReadFile(lazy.Stderr));
        Assert.Contains("poisoned", Poll.ReadFile(lazy.Stderr));
        Assert.DoesNotContain(w.Lines(), l => l.StartsWith("check BAD", StringComparison.Ordinal));
        if (code == 1)
            Assert.Contains("restore failed at step", Poll.ReadFile(restore.Stderr));
        else
            Assert.True(code is 128 + 7 or 128 + 9, $"restore ended with {code}:\n{restore.Output}");
        Assert.Equal(0, OuterPid(w.Pid));
    }
}
