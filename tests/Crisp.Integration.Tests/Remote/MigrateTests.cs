using System.Text.Json.Nodes;
using Crisp.Integration.Tests.Support;
using Crisp.Native;
using Crisp.TestSupport;
using Xunit;
using static Crisp.Integration.Tests.Remote.RemoteUtil;

namespace Crisp.Integration.Tests.Remote;

/// <summary>`crisp migrate` to `crisp agent`: over loopback, and across two network namespaces.</summary>
public class MigrateTests
{
    private const string Loop = "import sys, time\ni = 0\nwhile True:\n    print(i, flush=True)\n    i += 1\n    time.sleep(0.01)\n";

    private static ChildProcess StartLoop(TempDir dir, string[] prefix)
    {
        File.WriteAllText(dir["loop.py"], Loop);
        var argv = prefix.Concat(["/usr/bin/python3", dir["loop.py"]]).ToArray();
        var child = ChildProcess.Start(argv[0], argv[1..], dir["loop.out"], newSession: true);
        Assert.True(Poll.Until(() => Numbers(dir).Count > 5, 10_000), "the python loop does not print");
        return child;
    }

    private static List<long> Numbers(TempDir dir) =>
        Poll.ReadFile(dir["loop.out"]).Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(l => long.TryParse(l, out var v) ? v : -1).ToList();

    private static void AssertContinues(TempDir dir)
    {
        int before = Numbers(dir).Count;
        Assert.True(Poll.Until(() => Numbers(dir).Count > before + 20, 20_000), "the output did not continue after the migration");
        var nums = Numbers(dir);
        for (int i = 1; i < nums.Count; i++)
            Assert.True(nums[i] == nums[i - 1] + 1, $"output jumps from {nums[i - 1]} to {nums[i]} at line {i}");
    }

    [Fact]
    public void Migrate_moves_a_python_loop_whose_output_continues_and_reports_json()
    {
        using var dir = new TempDir();
        using var py = StartLoop(dir, []);
        using var agent = new BackgroundCrisp(dir, "agent", BackgroundCrisp.InNewPidNs, ["agent", "--listen", "127.0.0.1:0"]);
        int port = agent.Port();
        var r = CrispCli.Run(dir, "migrate", S(py.Pid), "--to", $"127.0.0.1:{port}", "--json");
        Assert.True(r.ExitCode == 0, r.ToString() + agent.Output);
        Assert.True(Poll.Until(() => Gone(py.Pid)), "the source is still alive");
        AssertContinues(dir);
        var json = JsonNode.Parse(r.Stdout[r.Stdout.IndexOf('{')..])!;
        Assert.True(json["succeeded"]!.GetValue<bool>());
        Assert.True(json["downtime_ms"]!.GetValue<double>() > 0);
        Assert.True(json["bytes_moved"]!.GetValue<long>() > 0);
        Console.WriteLine($"loopback migrate: {r.Stdout}");
    }

    [Fact]
    public void Migrate_to_an_agent_that_cannot_restore_resumes_the_source()
    {
        using var dir = new TempDir();
        using var py = StartLoop(dir, []);
        // An agent outside a fresh pid namespace cannot restore: the pid is taken by the source itself.
        using var agent = new BackgroundCrisp(dir, "agent", "agent", "--listen", "127.0.0.1:0");
        int port = agent.Port();
        var r = CrispCli.Run(dir, "migrate", S(py.Pid), "--to", $"127.0.0.1:{port}", "--json");
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("resumed", r.Stderr);
        Assert.False(Gone(py.Pid), "the source was not resumed");
        AssertContinues(dir);
        Assert.False(agent.Exited, "the agent stopped after a failed migration");
    }

    [Fact]
    public void Migrate_across_two_network_namespaces()
    {
        using var dir = new TempDir();
        string tag = Guid.NewGuid().ToString("N")[..6];
        string a = $"crisp-a-{tag}", b = $"crisp-b-{tag}";
        int net = 100 + Random.Shared.Next(100);
        string addrA = $"10.231.{net}.1", addrB = $"10.231.{net}.2";
        try
        {
            Sh($"ip netns add {a}");
            Sh($"ip netns add {b}");
            Sh($"ip link add va{tag} type veth peer name vb{tag}");
            Sh($"ip link set va{tag} netns {a}");
            Sh($"ip link set vb{tag} netns {b}");
            Sh($"ip -n {a} addr add {addrA}/24 dev va{tag}");
            Sh($"ip -n {b} addr add {addrB}/24 dev vb{tag}");
            Sh($"ip -n {a} link set va{tag} up");
            Sh($"ip -n {b} link set vb{tag} up");
            Sh($"ip -n {a} link set lo up");
            Sh($"ip -n {b} link set lo up");

            using var py = StartLoop(dir, ["/usr/sbin/ip", "netns", "exec", a]);
            using var agent = new BackgroundCrisp(dir, "agent", ["/usr/sbin/ip", "netns", "exec", b, .. BackgroundCrisp.InNewPidNs], ["agent", "--listen", $"{addrB}:0", "--insecure"]);
            int port = agent.Port();
            using var migrate = new BackgroundCrisp(dir, "migrate", ["/usr/sbin/ip", "netns", "exec", a], ["migrate", S(py.Pid), "--to", $"{addrB}:{port}", "--json", "--insecure"]);
            Assert.True(migrate.WaitExit(TimeSpan.FromSeconds(120)) == 0, migrate.Output + agent.Output);
            Assert.True(Poll.Until(() => Gone(py.Pid)), "the source is still alive");
            AssertContinues(dir);
            Console.WriteLine($"netns migrate: {Poll.ReadFile(migrate.Stdout)}");
        }
        finally
        {
            TrySh($"ip netns del {a}");
            TrySh($"ip netns del {b}");
        }
    }

    private static void Sh(string command)
    {
        var (code, output) = Run(command);
        if (code != 0) throw new InvalidOperationException($"{command}: exit {code}: {output}");
    }

    private static void TrySh(string command) => Run(command);

    private static (int, string) Run(string command)
    {
        var psi = new System.Diagnostics.ProcessStartInfo("/bin/sh", ["-c", command]) { RedirectStandardError = true, RedirectStandardOutput = true };
        using var p = System.Diagnostics.Process.Start(psi)!;
        string output = p.StandardOutput.ReadToEnd() + p.StandardError.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, output);
    }
}
