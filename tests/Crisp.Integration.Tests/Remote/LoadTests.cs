using Crisp.Integration.Tests.Support;
using Crisp.Native;
using Crisp.TestSupport;
using Xunit;
using static Crisp.Integration.Tests.Remote.RemoteUtil;

namespace Crisp.Integration.Tests.Remote;

/// <summary>Several transfers at once through one server: each process's memory verifies.</summary>
public class LoadTests
{
    [Fact]
    public void Four_concurrent_migrations_to_one_agent_each_verify_their_memory()
    {
        const int n = 4;
        using var dir = new TempDir();
        var works = new List<Memtouch>();
        var migrates = new List<BackgroundCrisp>();
        try
        {
            for (int i = 0; i < n; i++) works.Add(new Memtouch(dir, mib: 16, name: $"memtouch{i}"));
            using var agent = new BackgroundCrisp(dir, "agent", BackgroundCrisp.InNewPidNs, ["agent", "--listen", "127.0.0.1:0", "-W", dir.Path, "-o", "agent.log", "--max-concurrent", S(n), "--timeout", "300"]);
            int port = agent.Port();
            for (int i = 0; i < n; i++)
                migrates.Add(new BackgroundCrisp(dir, $"migrate{i}", "migrate", S(works[i].Pid), "--to", $"127.0.0.1:{port}", "--timeout", "300"));
            for (int i = 0; i < n; i++)
                Assert.True(migrates[i].WaitExit(TimeSpan.FromSeconds(400)) == 0, $"migrate {i}: {migrates[i].Output}\n{Poll.ReadFile(dir["agent.log"])}");
            for (int i = 0; i < n; i++)
            {
                var w = works[i];
                int moved = 0;
                Assert.True(Poll.Until(() => (moved = OuterPid(w.Pid)) != 0), $"migration {i}: no process {w.Pid} in the agent's namespace");
                w.Adopt(moved);
                Assert.StartsWith("check ok", w.Check(moved));
            }
            Assert.False(agent.Exited, "the agent ended");
        }
        finally
        {
            foreach (var m in migrates) m.Dispose();
            foreach (var w in works) w.Dispose();
        }
    }

    [Fact]
    public void One_page_server_serves_four_concurrent_lazy_restores_each_verified()
    {
        const int n = 4;
        using var dir = new TempDir();
        using var w = new Memtouch(dir, mib: 32);
        var d = CrispCli.Run(dir, "dump", "-t", S(w.Pid), "-D", dir["img"]);
        Assert.True(d.ExitCode == 0, d.ToString());
        using var server = new BackgroundCrisp(dir, "ps", "page-server", "--lazy-pages", "-D", dir["img"], "--address", "127.0.0.1", "--port", "0");
        int port = server.Port();
        var lazies = new List<BackgroundCrisp>();
        var restores = new List<BackgroundCrisp>();
        try
        {
            for (int i = 0; i < n; i++)
            {
                string work = dir[$"work{i}"];
                Directory.CreateDirectory(work);
                lazies.Add(new BackgroundCrisp(dir, $"lazy{i}", "lazy-pages", "-D", dir["img"], "-W", work, "--page-server", "--address", "127.0.0.1", "--port", S(port)));
            }
            for (int i = 0; i < n; i++)
            {
                string work = dir[$"work{i}"];
                Assert.True(Poll.Until(() => File.Exists(Path.Combine(work, "lazy-pages.socket")) || lazies[i].Exited, 120_000), lazies[i].Output);
            }
            for (int i = 0; i < n; i++)
                restores.Add(new BackgroundCrisp(dir, $"restore{i}", BackgroundCrisp.InNewPidNs,
                    ["restore", "-D", dir["img"], "-W", dir[$"work{i}"], "--lazy-pages", "--pidfile", Path.Combine(dir[$"work{i}"], "restored.pid")]));
            // Every restore runs in its own pid namespace under the same pid: find each by its namespace's init.
            var pids = new List<int>();
            for (int i = 0; i < n; i++)
            {
                string pidFile = Path.Combine(dir[$"work{i}"], "restored.pid");
                Assert.True(Poll.Until(() => File.Exists(pidFile) || restores[i].Exited, 300_000), $"restore {i}: {restores[i].Output}");
                int found = 0;
                var restore = restores[i];
                Assert.True(Poll.Until(() => (found = RestoredUnder(restore.Pid, w.Pid)) != 0, 30_000), $"restore {i}: no process {w.Pid} in its namespace");
                pids.Add(found);
                w.Adopt(found);
            }
            Assert.Equal(n, pids.Distinct().Count());
            // All four touch and verify their memory at the same time; each writes one check line.
            int before = w.Lines().Count(l => l.StartsWith("check", StringComparison.Ordinal));
            foreach (int pid in pids) Errno.Check(LibC.kill(pid, LibC.SIGUSR1), "kill", $"{pid}, SIGUSR1");
            Assert.True(Poll.Until(() => w.Lines().Count(l => l.StartsWith("check", StringComparison.Ordinal)) >= before + n, 180_000), "not every restored process wrote its check line");
            var checks = w.Lines().Where(l => l.StartsWith("check", StringComparison.Ordinal)).Skip(before).ToList();
            Assert.All(checks, c => Assert.StartsWith("check ok", c));
            for (int i = 0; i < n; i++)
                Assert.True(lazies[i].WaitExit(TimeSpan.FromSeconds(180)) == 0, $"lazy-pages {i}: {lazies[i].Output}");
            Assert.False(server.Exited, "the page server stopped");
        }
        finally
        {
            foreach (var r in restores) r.Dispose();
            foreach (var l in lazies) l.Dispose();
        }
    }

    /// <summary>The process that is <paramref name="innerPid"/> in the pid namespace made by the unshare <paramref name="unsharePid"/> (its descendant), or 0.</summary>
    private static int RestoredUnder(int unsharePid, int innerPid)
    {
        foreach (var d in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(d), out int pid)) continue;
            string status;
            try { status = File.ReadAllText(Path.Combine(d, "status")); } catch (IOException) { continue; }
            var line = status.Split('\n').FirstOrDefault(l => l.StartsWith("NSpid:", StringComparison.Ordinal));
            if (line is null) continue;
            var ids = line["NSpid:".Length..].Split('\t', StringSplitOptions.RemoveEmptyEntries);
            if (ids.Length < 2 || ids[^1] != S(innerPid)) continue;
            if (IsDescendant(pid, unsharePid)) return pid;
        }
        return 0;
    }

    private static bool IsDescendant(int pid, int ancestor)
    {
        for (int i = 0; i < 64 && pid > 1; i++)
        {
            string stat;
            try { stat = File.ReadAllText($"/proc/{pid}/stat"); } catch (IOException) { return false; }
            int ppid = int.Parse(stat[(stat.LastIndexOf(')') + 2)..].Split(' ')[1], System.Globalization.CultureInfo.InvariantCulture);
            if (ppid == ancestor) return true;
            pid = ppid;
        }
        return false;
    }
}
