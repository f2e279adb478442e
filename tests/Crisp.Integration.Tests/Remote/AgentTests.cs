using System.Net;
using System.Net.Sockets;
using Crisp.TestSupport;
using Xunit;

namespace Crisp.Integration.Tests.Remote;

/// <summary>`crisp agent` never waits forever: it ends on SIGTERM even while a source is connected and silent.</summary>
public class AgentTests
{
    [Fact]
    public void Agent_ends_on_sigterm_while_a_connected_source_sends_nothing()
    {
        using var dir = new TempDir();
        using var agent = new BackgroundCrisp(dir, "agent", "agent", "--listen", "127.0.0.1:0", "--timeout", "300", "-W", dir.Path, "-o", "agent.log");
        int port = agent.Port();
        using var silent = new TcpClient();
        silent.Connect(IPAddress.Loopback, port);
        // Accepted and reading (it logs that first), not merely queued in the backlog.
        Assert.True(Poll.Until(() => Poll.ReadFile(dir["agent.log"]).Contains("migration from"), 20_000), agent.Output);
        agent.Terminate();
        Assert.Equal(0, agent.WaitExit(TimeSpan.FromSeconds(20)));
        Assert.Contains("dropped before it started", Poll.ReadFile(agent.Stderr));
        Assert.Contains("dropped before it started", Poll.ReadFile(dir["agent.log"]));
    }
}
