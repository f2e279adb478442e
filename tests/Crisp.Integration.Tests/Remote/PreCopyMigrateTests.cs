using System.Text.Json.Nodes;
using Crisp.Integration.Tests.Support;
using Crisp.Native;
using Crisp.TestSupport;
using Xunit;
using Xunit.Abstractions;
using static Crisp.Integration.Tests.Remote.RemoteUtil;

namespace Crisp.Integration.Tests.Remote;

/// <summary>
/// `crisp migrate --pre-copy` to `crisp agent` (in a pid namespace of its own) over loopback: a
/// dirtier rewriting 10% of its memory a second moves in rounds while it runs, then the rest
/// frozen; the copy runs on and passes its own check of every page against its generation.
/// </summary>
public sealed class PreCopyMigrateTests(ITestOutputHelper output)
{
    [Fact]
    public void Pre_copy_moves_a_process_that_keeps_writing_and_its_memory_checks()
    {
        const int mib = 64;
        using var dir = new TempDir();
        using var w = new Dirtier(dir, mib, percentPerSecond: 10);
        using var agent = new BackgroundCrisp(dir, "agent", BackgroundCrisp.InNewPidNs, ["agent", "--listen", "127.0.0.1:0"]);
        int port = agent.Port();
        var r = CrispCli.Run(dir, "migrate", S(w.Pid), "--to", $"127.0.0.1:{port}", "--pre-copy", "--json");
        output.WriteLine(r.Stdout);
        Assert.True(r.ExitCode == 0, r.ToString() + agent.Output);
        w.Reap();
        var json = JsonNode.Parse(r.Stdout[r.Stdout.IndexOf('{')..])!;
        Assert.True(json["succeeded"]!.GetValue<bool>());
        Assert.Equal("pre-copy", json["mode"]!.GetValue<string>());
        var rounds = json["pre_copy_round_pages"]!.AsArray().Select(n => n!.GetValue<ulong>()).ToList();
        // Round 0 is all of the memory; the frozen remainder is a fraction of it.
        Assert.True(rounds[0] >= mib * 256UL, $"round 0 sent {rounds[0]} pages");
        ulong final = json["final_pages"]!.GetValue<ulong>();
        Assert.True(final < rounds[0] / 4, $"{final} pages were left for the frozen round");
        Assert.True(json["downtime_ms"]!.GetValue<double>() > 0);
        // The final round is restored lazily from the rounds' images: the agent's daemon pushed the pages in.
        var daemon = json["destination_daemon"];
        Assert.True(daemon is not null, "no statistics from the agent's lazy-pages daemon: " + r.Stdout);
        long pushed = new[] { "fault_pages", "fault_around_pages", "prefetch_pages", "working_set_pages" }.Sum(k => daemon![k]?.GetValue<long>() ?? 0);
        Assert.True(pushed >= (long)rounds[0] / 2, $"the agent's daemon brought in {pushed} pages of {rounds[0]}");

        int inner = json["destination_pid"]!.GetValue<int>();
        int pid = WaitOuterPid(inner, agent);
        long before = w.Written();
        Assert.True(Poll.Until(() => w.Written() > before, 20_000), "the migrated copy does not write");
        Assert.StartsWith("check ok", w.Check(pid));
        LibC.kill(pid, LibC.SIGKILL);
    }

    /// <summary>
    /// The rounds copy while the process runs: with the process rewriting all of its memory five
    /// times a second, many pages change while a round reads them. Each of those must come again
    /// in a later round or the frozen one; the copy's check of every page fails on a single stale one.
    /// </summary>
    [Fact]
    public void Pre_copy_loses_no_page_written_while_a_round_copies()
    {
        const int mib = 128;
        using var dir = new TempDir();
        using var w = new Dirtier(dir, mib, percentPerSecond: 500);
        using var agent = new BackgroundCrisp(dir, "agent", BackgroundCrisp.InNewPidNs, ["agent", "--listen", "127.0.0.1:0"]);
        int port = agent.Port();
        var r = CrispCli.Run(dir, "migrate", S(w.Pid), "--to", $"127.0.0.1:{port}", "--pre-copy", "--max-rounds", "3", "--json");
        output.WriteLine(r.Stdout);
        Assert.True(r.ExitCode == 0, r.ToString() + agent.Output);
        w.Reap();
        var json = JsonNode.Parse(r.Stdout[r.Stdout.IndexOf('{')..])!;
        Assert.True(json["succeeded"]!.GetValue<bool>());
        var rounds = json["pre_copy_rounds"]!.AsArray();
        Assert.True(rounds.Count >= 2, $"{rounds.Count} round(s)");
        int pid = WaitOuterPid(json["destination_pid"]!.GetValue<int>(), agent);
        long before = w.Written();
        Assert.True(Poll.Until(() => w.Written() > before, 20_000), "the migrated copy does not write");
        Assert.StartsWith("check ok", w.Check(pid));
        LibC.kill(pid, LibC.SIGKILL);
    }
}
