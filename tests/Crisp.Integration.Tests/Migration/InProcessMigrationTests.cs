using System.Net;
using System.Net.Sockets;
using Crisp.Checkpoint.Dump;
using Crisp.Integration.Tests.Support;
using Crisp.Migration;
using Crisp.TestSupport;
using Crisp.PageServer.Client;
using Crisp.Images;
using Crisp.Images.Pages;
using Xunit;

namespace Crisp.Integration.Tests.Migration;

/// <summary>
/// The migration engine (Crisp.Migration) driven in-process, without the crisp command: the lazy
/// dump's kill/resume rule, the agent's bounded reads, and a migrate that fails on the agent.
/// </summary>
public class InProcessMigrationTests
{
    private static readonly IPEndPoint AnyLoopback = new(IPAddress.Loopback, 0);

    private static void AssertRuns(Memtouch w)
    {
        Assert.StartsWith("check ok", w.Check(w.Pid));
        long n = w.Ticks().Last().N;
        Assert.True(Poll.Until(() => w.Ticks().Last().N > n + 3), "ticks stopped after the resumed dump");
    }

    [Fact]
    public void Lazy_dump_serves_every_lazy_page_from_the_frozen_tree_then_kills_it()
    {
        using var dir = new TempDir();
        using var w = new Memtouch(dir, mib: 8);
        Task reader = Task.CompletedTask;
        var server = new LazyDumpServer(new LazyDumpServerOptions
        {
            EndPoint = AnyLoopback,
            HandleSignals = false,
            Listening = ep => reader = Task.Run(() =>
            {
                using var pagemap = new Crisp.Images.ImageDir(dir["img"]).OpenPagemap(w.Pid);
                using var source = new RemotePageSource(ep);
                using var ch = source.OpenChannel();
                var (addr, sum) = w.Buffers[0];
                var buf = new byte[w.Mib << 20];
                ch.Read(w.Pid, addr, buf);
                Assert.Equal(sum, Memtouch.Checksum(buf));
                var chunk = new byte[1 << 20];
                foreach (var r in pagemap.Runs.Where(r => r.IsLazy))
                    for (ulong p = r.Vaddr; p < r.End;)
                    {
                        int n = (int)Math.Min((ulong)chunk.Length, r.End - p);
                        ch.Read(w.Pid, p, chunk.AsSpan(0, n));
                        p += (ulong)n;
                    }
            }),
        });
        var result = LazyDump.Run(new DumpOptions { Pid = w.Pid, ImagesDir = dir["img"] }, server);
        Assert.True(Poll.Until(() => reader.IsCompleted), "the reader never finished");
        Assert.Null(reader.Exception);
        Assert.True(result.Succeeded, result.Outcome);
        Assert.False(result.Resumed);
        Assert.StartsWith("all ", result.Outcome);
        Assert.True(Poll.Until(() => RemoteUtilGone(w.Pid)), "the source is alive after every lazy page was delivered");
    }

    [Fact]
    public void Lazy_dump_resumed_for_a_silent_destination_serves_it_no_page_afterwards()
    {
        using var dir = new TempDir();
        using var w = new Memtouch(dir, mib: 4);
        IPEndPoint? bound = null;
        var silent = new TcpClient();
        var server = new LazyDumpServer(new LazyDumpServerOptions
        {
            EndPoint = AnyLoopback,
            HandleSignals = false,
            FirstPageTimeout = TimeSpan.FromSeconds(1),
            Listening = ep => { bound = ep; silent.Connect(ep); },
        });
        var result = LazyDump.Run(new DumpOptions { Pid = w.Pid, ImagesDir = dir["img"] }, server);
        Assert.True(result.Resumed, result.Outcome);
        Assert.False(result.Succeeded);
        Assert.Contains("asked for no page within 1 s", result.Outcome);
        AssertRuns(w);
        // The resumed tree's memory is not served to anyone: the server is gone.
        using var late = new RemotePageSource(bound!);
        Assert.ThrowsAny<Exception>(() =>
        {
            using var ch = late.OpenChannel();
            ch.Read(w.Pid, w.Buffers[0].Address, new byte[4096]);
        });
        silent.Dispose();
    }

    [Fact]
    public void Frozen_source_refuses_every_read_once_it_chose_to_resume_and_never_resumes_after_a_read()
    {
        using var dir = new TempDir();
        using var w = new Memtouch(dir, mib: 2);
        var tree = new LazyDumpTree([w.Pid], new Dictionary<int, IReadOnlyList<PageRange>> { [w.Pid] = [new PageRange(w.Buffers[0].Address, 512)] });
        using (var refused = new FrozenProcessPageSource(tree))
        {
            Assert.True(refused.TryRefuseReads());
            using var ch = refused.OpenChannel();
            Assert.Throws<PageSourceException>(() => ch.Read(w.Pid, w.Buffers[0].Address, new byte[4096]));
            Assert.Equal(0UL, refused.Delivered.Count);
        }
        using var read = new FrozenProcessPageSource(tree);
        using (var ch = read.OpenChannel())
            ch.Read(w.Pid, w.Buffers[0].Address, new byte[4096]);
        Assert.False(read.TryRefuseReads());
        Assert.Equal(1UL, read.Delivered.Count);
    }

    [Fact]
    public void Agent_drops_a_peer_that_sends_nothing_and_serves_the_next_migration()
    {
        using var dir = new TempDir();
        using var w = new Memtouch(dir, mib: 4);
        using var agent = new MigrationAgent(new MigrationAgentOptions
        {
            Listen = AnyLoopback,
            BaseDir = dir.Path,
            PeerTimeout = TimeSpan.FromSeconds(5), // the next source dumps between connect and its first file
        });
        var ended = new System.Collections.Concurrent.ConcurrentQueue<string?>();
        agent.MigrationEnded += (_, error) => ended.Enqueue(error);
        using var stop = new CancellationTokenSource();
        var run = new Thread(() => agent.Run(stop.Token)) { Name = "in-process agent" };
        run.Start();
        try
        {
            using var silent = new TcpClient();
            silent.Connect(agent.LocalEndPoint);
            Assert.True(Poll.Until(() => !ended.IsEmpty, 20_000), "the agent still waits for a silent peer");
            Assert.True(ended.TryPeek(out var why));
            Assert.Contains("sent nothing for 5 s (0 image files received)", why);

            // The next source is served. This agent shares the test's pid namespace, so its
            // restore fails (the pid is the source's own): the source must be resumed.
            var result = MigrationSource.Run(new MigrationRequest
            {
                Pid = w.Pid,
                Agent = agent.LocalEndPoint,
                Timeout = TimeSpan.FromSeconds(30),
                TempDir = dir.Path,
                HandleSignals = false,
            });
            Assert.True(result.Resumed, result.Stats.Outcome);
            Assert.False(result.Stats.Succeeded);
            Assert.Contains("the agent failed: restore failed", result.Stats.Outcome);
            AssertRuns(w);
            Assert.True(Poll.Until(() => agent.Served == 2, 20_000), $"the agent ended {agent.Served} migrations");
            Assert.Equal(2, agent.Failed);
        }
        finally
        {
            stop.Cancel();
            Assert.True(run.Join(TimeSpan.FromSeconds(20)), "the agent did not stop when cancelled");
        }
    }

    private static bool RemoteUtilGone(int pid) => Remote.RemoteUtil.Gone(pid);
}
