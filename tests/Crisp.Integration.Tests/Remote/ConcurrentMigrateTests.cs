using Crisp.Integration.Tests.Support;
using Crisp.TestSupport;
using Xunit;
using static Crisp.Integration.Tests.Remote.RemoteUtil;

namespace Crisp.Integration.Tests.Remote;

/// <summary>One `crisp agent` receives several `crisp migrate` at the same time.</summary>
public class ConcurrentMigrateTests
{
    private const string Loop = "import sys, time\ni = 0\nwhile True:\n    print(i, flush=True)\n    i += 1\n    time.sleep(0.01)\n";

    private static List<long> Numbers(string file) =>
        Poll.ReadFile(file).Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(l => long.TryParse(l, out var v) ? v : -1).ToList();

    [Fact]
    public void Three_concurrent_migrations_to_one_agent_with_a_silent_source_connected_all_move_and_their_output_continues()
    {
        const int n = 3;
        using var dir = new TempDir();
        File.WriteAllText(dir["loop.py"], Loop);
        var loops = new List<ChildProcess>();
        var migrates = new List<BackgroundCrisp>();
        try
        {
            for (int i = 0; i < n; i++)
                loops.Add(ChildProcess.Start("/usr/bin/python3", [dir["loop.py"]], dir[$"loop{i}.out"], newSession: true));
            for (int i = 0; i < n; i++)
                Assert.True(Poll.Until(() => Numbers(dir[$"loop{i}.out"]).Count > 5, 10_000), $"python loop {i} does not print");
            using var agent = new BackgroundCrisp(dir, "agent", BackgroundCrisp.InNewPidNs, ["agent", "--listen", "127.0.0.1:0", "-W", dir.Path, "-o", "agent.log", "--timeout", "300"]);
            int port = agent.Port();
            // A source that connects and stays silent holds one migration open for the whole
            // test: an agent serving one at a time would make every other wait behind it.
            using var silent = new System.Net.Sockets.TcpClient();
            silent.Connect(System.Net.IPAddress.Loopback, port);
            Assert.True(Poll.Until(() => Poll.ReadFile(dir["agent.log"]).Contains("agent: migration from"), 20_000), agent.Output);
            for (int i = 0; i < n; i++)
                migrates.Add(new BackgroundCrisp(dir, $"migrate{i}", "migrate", S(loops[i].Pid), "--to", $"127.0.0.1:{port}"));
            for (int i = 0; i < n; i++)
                Assert.True(migrates[i].WaitExit(TimeSpan.FromSeconds(120)) == 0, migrates[i].Output + agent.Output + Poll.ReadFile(dir["agent.log"]));
            Assert.True(silent.Connected && !agent.Exited, "the silent source was dropped or the agent ended");
            for (int i = 0; i < n; i++)
            {
                int pid = loops[i].Pid;
                Assert.True(Poll.Until(() => Gone(pid)), $"source {i} is still alive");
                string file = dir[$"loop{i}.out"];
                int before = Numbers(file).Count;
                Assert.True(Poll.Until(() => Numbers(file).Count > before + 20, 20_000), $"the output of loop {i} did not continue");
                var nums = Numbers(file);
                for (int k = 1; k < nums.Count; k++)
                    Assert.True(nums[k] == nums[k - 1] + 1, $"loop {i}: output jumps from {nums[k - 1]} to {nums[k]} at line {k}");
            }
        }
        finally
        {
            foreach (var m in migrates) m.Dispose();
            foreach (var l in loops) l.Dispose();
        }
    }
}
