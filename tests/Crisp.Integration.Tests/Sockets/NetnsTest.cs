using Crisp.Integration.Tests.Support;
using Crisp.Native;
using Crisp.TestSupport;
using static Crisp.TestSupport.TestProcesses;
using static Crisp.Integration.Tests.Support.Commands;

namespace Crisp.Integration.Tests.Sockets;

/// <summary>
/// A test that runs crisp and its workloads in a network namespace of its own (lo up), made here
/// and deleted on Dispose with everything in it: the processes it started (<see cref="Children"/>,
/// reaped) and the trees crisp restored (<see cref="Restored"/>, not its children: killed by pid).
/// </summary>
public abstract class NetnsTest : IDisposable
{
    protected const string Ip = "/usr/sbin/ip";
    protected TempDir TestDir { get; } = new();
    /// <summary>The namespace's name (`ip netns`).</summary>
    protected string Ns { get; }
    protected List<int> Children { get; } = [];
    protected List<int> Restored { get; } = [];

    protected NetnsTest(string prefix)
    {
        Ns = $"{prefix}-{Guid.NewGuid():N}"[..20];
        Sh(Ip, "netns", "add", Ns);
        Sh(Ip, "-n", Ns, "link", "set", "lo", "up");
    }

    /// <summary>`crisp ARGS` inside the namespace, as a user runs it.</summary>
    protected CliResult Crisp(params string[] args) => CrispCli.RunUnder(TestDir, [Ip, "netns", "exec", Ns], args);

    public void Dispose()
    {
        foreach (var pid in Restored) LibC.kill(pid, LibC.SIGKILL);
        foreach (var pid in Children) if (Directory.Exists($"/proc/{pid}")) KillAndReap(pid);
        Run(Ip, "netns", "del", Ns);
        TestDir.Dispose();
        GC.SuppressFinalize(this);
    }
}
