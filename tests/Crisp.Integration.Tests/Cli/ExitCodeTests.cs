using System.Net;
using System.Net.Sockets;
using Crisp.Integration.Tests.Remote;
using Crisp.Integration.Tests.Support;
using Crisp.TestSupport;
using Xunit;
using static Crisp.Integration.Tests.Remote.RemoteUtil;

namespace Crisp.Integration.Tests.Cli;

/// <summary>
/// The exit codes the README documents, from the built CLI run as a process: 0 success, 1 the
/// operation failed (one clear line on stderr and in the -o log), 2 bad usage, 3 bad or corrupt
/// images (made by truncating or garbling a real dump). lazy-pages' 0 and 1 after a real lazy
/// restore are asserted in Lazy/LazyRestoreTests.
/// </summary>
public class ExitCodeTests
{
    private static string[] ErrorLines(CliResult r) =>
        r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries).Where(l => l.StartsWith("crisp: Error:", StringComparison.Ordinal)).ToArray();

    /// <summary>Exactly one error line on stderr, and the same message in the log.</summary>
    private static string AssertOneClearLine(CliResult r, string log)
    {
        var line = Assert.Single(ErrorLines(r));
        string message = line["crisp: Error: ".Length..];
        Assert.Contains("Error: " + message, Poll.ReadFile(log));
        return message;
    }

    /// <summary>A pid nobody has: a child of ours that exited and was reaped.</summary>
    private static int FreePid()
    {
        using var c = ChildProcess.Start("/bin/true");
        c.WaitExit();
        return c.Pid;
    }

    [Fact]
    public void Dump_exits_0_on_success_1_when_it_fails_and_2_on_bad_usage()
    {
        using var dir = new TempDir();
        using var w = new Memtouch(dir, mib: 2);
        var ok = CrispCli.Run(dir, "dump", "-t", S(w.Pid), "-D", dir["img"], "-R", "-o", "dump.log");
        Assert.True(ok.ExitCode == 0, ok.ToString());
        Assert.Empty(ErrorLines(ok));

        var failed = CrispCli.Run(dir, "dump", "-t", S(FreePid()), "-D", dir["img2"], "-o", "dump.log");
        Assert.True(failed.ExitCode == 1, failed.ToString());
        Assert.Contains("no process", AssertOneClearLine(failed, dir["img2/dump.log"]));

        var unknown = CrispCli.Run(dir, "dump", "-t", S(w.Pid), "-D", dir["img3"], "--no-such-option");
        Assert.True(unknown.ExitCode == 2, unknown.ToString());
        Assert.Contains("--no-such-option", unknown.Stderr);
        var noTree = CrispCli.Run(dir, "dump", "-D", dir["img3"]);
        Assert.True(noTree.ExitCode == 2, noTree.ToString());
        var both = CrispCli.Run(dir, "dump", "-t", S(w.Pid), "-D", dir["img3"], "--lazy-pages", "--page-server", "--address", "127.0.0.1");
        Assert.True(both.ExitCode == 2, both.ToString());
        var zero = CrispCli.Run(dir, "dump", "-t", S(w.Pid), "-D", dir["img3"], "--lazy-pages", "--address", "127.0.0.1", "--lazy-timeout", "0");
        Assert.True(zero.ExitCode == 2, zero.ToString());
        // None of these touched the process.
        Assert.StartsWith("check ok", w.Check(w.Pid));
    }

    [Fact]
    public void Restore_exits_3_on_corrupt_images_1_when_it_fails_2_on_bad_usage_and_0_on_success()
    {
        using var dir = new TempDir();
        // A plain sleep, our own child: killed and reaped here, its pid is free for the restore.
        var sleeper = ChildProcess.Start("/bin/sleep", ["1000"], newSession: true);
        int pid = sleeper.Pid;
        try
        {
            var d = CrispCli.Run(dir, "dump", "-t", S(pid), "-D", dir["img"], "-R");
            Assert.True(d.ExitCode == 0, d.ToString());

            // mm-PID.img cut in the middle of its record.
            CopyImages(dir["img"], dir["cut"]);
            string mm = dir[$"cut/mm-{pid}.img"];
            File.WriteAllBytes(mm, File.ReadAllBytes(mm)[..(int)(new FileInfo(mm).Length / 2)]);
            var cut = CrispCli.Run(dir, "restore", "-D", dir["cut"], "-o", "restore.log");
            Assert.True(cut.ExitCode == 3, cut.ToString());
            Assert.Contains($"mm-{pid}.img", AssertOneClearLine(cut, dir["cut/restore.log"]));

            // core-PID.img with its own magic garbled.
            CopyImages(dir["img"], dir["garbled"]);
            string core = dir[$"garbled/core-{pid}.img"];
            var bytes = File.ReadAllBytes(core);
            for (int i = 4; i < 8; i++) bytes[i] ^= 0x5a;
            File.WriteAllBytes(core, bytes);
            var garbled = CrispCli.Run(dir, "restore", "-D", dir["garbled"], "-o", "restore.log");
            Assert.True(garbled.ExitCode == 3, garbled.ToString());
            Assert.Contains($"core-{pid}.img", AssertOneClearLine(garbled, dir["garbled/restore.log"]));

            // Good images, but the pid is still taken by the running source: the operation fails.
            var taken = CrispCli.Run(dir, "restore", "-D", dir["img"], "-d", "-o", "restore.log");
            Assert.True(taken.ExitCode == 1, taken.ToString());
            Assert.Contains("in use", AssertOneClearLine(taken, dir["img/restore.log"]));

            var unknown = CrispCli.Run(dir, "restore", "-D", dir["img"], "--no-such-option");
            Assert.True(unknown.ExitCode == 2, unknown.ToString());
            var badInherit = CrispCli.Run(dir, "restore", "-D", dir["img"], "--inherit-fd", "junk");
            Assert.True(badInherit.ExitCode == 2, badInherit.ToString());
            Assert.True(sleeper.IsAlive, "a failed restore touched the source");
        }
        finally
        {
            sleeper.Dispose();
        }

        // The source gone and reaped, the same images restore: 0.
        var ok = CrispCli.Run(dir, "restore", "-D", dir["img"], "-d", "-o", "restore2.log");
        using var restored = ChildProcess.Adopt(pid); // the restored sleep: killed at the end
        Assert.True(ok.ExitCode == 0, ok.ToString());
        Assert.Equal("sleep", Poll.ReadFile($"/proc/{pid}/comm").Trim());
    }

    [Fact]
    public void Lazy_pages_exits_2_on_bad_usage_and_1_when_its_work_dir_is_unusable()
    {
        using var dir = new TempDir();
        var unknown = CrispCli.Run(dir, "lazy-pages", "-D", dir.Path, "--no-such-option");
        Assert.True(unknown.ExitCode == 2, unknown.ToString());
        var noAddress = CrispCli.Run(dir, "lazy-pages", "-D", dir.Path, "--page-server");
        Assert.True(noAddress.ExitCode == 2, noAddress.ToString());
        File.WriteAllText(dir["not-a-dir"], "");
        var badWork = CrispCli.Run(dir, "lazy-pages", "-D", dir.Path, "-W", dir["not-a-dir"]);
        Assert.True(badWork.ExitCode == 1, badWork.ToString());
        Assert.Single(ErrorLines(badWork));
    }

    [Fact]
    public void Page_server_exits_0_on_sigterm_1_when_its_port_is_taken_and_2_on_bad_usage()
    {
        using var dir = new TempDir();
        var unknown = CrispCli.Run(dir, "page-server", "-D", dir["img"], "--no-such-option");
        Assert.True(unknown.ExitCode == 2, unknown.ToString());

        var holder = new TcpListener(IPAddress.Loopback, 0);
        holder.Start();
        try
        {
            int taken = ((IPEndPoint)holder.LocalEndpoint).Port;
            var busy = CrispCli.Run(dir, "page-server", "-D", dir["img"], "--address", "127.0.0.1", "--port", S(taken), "-o", "ps.log");
            Assert.True(busy.ExitCode == 1, busy.ToString());
            AssertOneClearLine(busy, dir["img/ps.log"]);
        }
        finally { holder.Stop(); }

        using var server = new BackgroundCrisp(dir, "ps", "page-server", "-D", dir["img"], "--address", "127.0.0.1", "--port", "0");
        server.Port();
        server.Terminate();
        Assert.Equal(0, server.WaitExit(TimeSpan.FromSeconds(20)));
    }

    [Fact]
    public void Check_exits_0_when_the_kernel_has_everything_and_2_on_bad_usage()
    {
        using var dir = new TempDir();
        var ok = CrispCli.Run(dir, "check");
        Assert.True(ok.ExitCode == 0, ok.ToString());
        Assert.Contains("Looks good.", ok.Stdout);
        var unknown = CrispCli.Run(dir, "check", "--no-such-option");
        Assert.True(unknown.ExitCode == 2, unknown.ToString());
        Assert.Contains("--no-such-option", unknown.Stderr);
        var noCommand = CrispCli.Run(dir, "no-such-command");
        Assert.True(noCommand.ExitCode == 2, noCommand.ToString());
    }
}
