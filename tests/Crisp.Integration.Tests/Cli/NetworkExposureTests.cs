using Crisp.Integration.Tests.Remote;
using Crisp.Integration.Tests.Support;
using Crisp.TestSupport;
using Xunit;
using static Crisp.Integration.Tests.Remote.RemoteUtil;

namespace Crisp.Integration.Tests.Cli;

/// <summary>
/// Servers without authentication listen on loopback only unless --insecure says otherwise:
/// whoever reaches a page server reads process memory, whoever reaches the agent runs code as root.
/// </summary>
public class NetworkExposureTests
{
    [Fact]
    public void Servers_refuse_a_non_loopback_address_without_insecure_and_exit_2()
    {
        using var dir = new TempDir();
        var ps = CrispCli.Run(dir, "page-server", "-D", dir["img"], "--port", "0");
        Assert.True(ps.ExitCode == 2, ps.ToString());
        Assert.Contains("--insecure", ps.Stderr);
        Assert.Contains("every address", ps.Stderr);

        var agent = CrispCli.Run(dir, "agent", "--listen", "0.0.0.0:0");
        Assert.True(agent.ExitCode == 2, agent.ToString());
        Assert.Contains("root", agent.Stderr);

        var migrate = CrispCli.Run(dir, "migrate", "1", "--to", "192.0.2.1:1");
        Assert.True(migrate.ExitCode == 2, migrate.ToString());
        Assert.Contains("--insecure", migrate.Stderr);

        using var w = new Memtouch(dir, mib: 1);
        var dump = CrispCli.Run(dir, "dump", "-t", S(w.Pid), "-D", dir["img2"], "--lazy-pages", "--port", "0");
        Assert.True(dump.ExitCode == 2, dump.ToString());
        Assert.Contains("--insecure", dump.Stderr);
        // Refused before anything was frozen: the process goes on as it was.
        Assert.StartsWith("check ok", w.Check(w.Pid));
    }

    [Fact]
    public void Insecure_lets_a_page_server_listen_on_every_address()
    {
        using var dir = new TempDir();
        using var server = new BackgroundCrisp(dir, "ps", "page-server", "-D", dir["img"], "--port", "0", "--insecure");
        server.Port();
        server.Terminate();
        Assert.Equal(0, server.WaitExit(TimeSpan.FromSeconds(20)));
    }
}
