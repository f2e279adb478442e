using System.Globalization;
using Crisp.Integration.Tests.Remote;
using Crisp.Integration.Tests.Support;
using Crisp.Native;
using Crisp.TestSupport;
using Xunit;
using Xunit.Abstractions;
using static Crisp.Integration.Tests.Remote.RemoteUtil;

namespace Crisp.Integration.Tests.Lazy;

/// <summary>
/// Lazy migration with CRIU 4.2 on one side and crisp on the other, one host, the destination in a
/// new pid namespace (it takes the pid the frozen source still holds): a 64 MiB memtouch whose
/// every buffer is verified after it moved.
/// </summary>
public sealed class CriuLazyMigrationTests(ITestOutputHelper output)
{
    [Criu4Fact]
    public void Crisp_lazy_pages_fetches_from_criu4_dump_lazy_pages_over_its_one_connection()
    {
        using var pipes = new Criu4.PipeMaxSize();
        using var dir = new TempDir();
        using var w = new Memtouch(dir, mib: 64);
        // criu4 dump does not say which port it got for --port 0: take a free one, and another if
        // it was taken meanwhile. The daemon starts first and retries its first connection until
        // CRIU listens; its socket appears only once CRIU has accepted it.
        Directory.CreateDirectory(dir["dst"]);
        CriuCommand? dump = null;
        BackgroundCrisp? lazy = null;
        string log = "";
        for (int attempt = 0; lazy is null; attempt++)
        {
            int port = LoopbackPort.Unused();
            string src = dir[$"src{attempt}"];
            log = dir[$"dump{attempt}.log"];
            Directory.CreateDirectory(src);
            var d = new BackgroundCrisp(dir, $"lazy{attempt}", "lazy-pages", "-D", dir["dst"], "--page-server",
                "--address", "127.0.0.1", "--port", S(port), "-v4", "-o", "lazy.log");
            dump = new CriuCommand(dir, $"dump{attempt}", "dump", "-t", S(w.Pid), "-D", src, "--lazy-pages",
                "--address", "127.0.0.1", "--port", S(port), "-o", log, "-v4");
            Assert.True(Poll.Until(() => File.Exists(Path.Combine(dir["dst"], "lazy-pages.socket")) || dump.Exited || d.Exited, 60_000),
                $"neither criu4 dump served nor ended:\n{Tail(log)}\n{d.Output}");
            if (!dump.Exited && !d.Exited)
            {
                lazy = d;
                CopyImages(src, dir["dst"]); // CRIU writes every image before it starts serving pages
                break;
            }
            d.Dispose();
            dump.Dispose();
            Assert.True(attempt < 3 && Poll.ReadFile(log).Contains("Can't bind"), $"criu4 dump ended:\n{Tail(log)}\n{dump.Output}\n{d.Output}");
        }
        using var dumpDone = dump!;
        using var lazyPages = lazy!;

        using var restore = new BackgroundCrisp(dir, "restore", BackgroundCrisp.InNewPidNs, ["restore", "-D", dir["dst"], "--lazy-pages", "--pidfile", dir["restored.pid"]]);
        int moved = WaitOuterPid(w.Pid, restore, dir["restored.pid"]);
        w.Adopt(moved);

        Assert.StartsWith("check ok", w.Check(moved));
        int lazyExit = lazyPages.WaitExit(TimeSpan.FromSeconds(60));
        output.WriteLine(lazyPages.Output);
        Assert.True(lazyExit == 0, lazyPages.Output);
        // the prefetch shared the one connection CRIU's page server accepts
        Assert.Contains("refused a second connection", Poll.ReadFile(Path.Combine(dir["dst"], "lazy.log")));
        Assert.True(dumpDone.WaitExit(TimeSpan.FromSeconds(60)) == 0, $"criu4 dump:\n{Tail(log)}");
        Assert.True(Gone(w.Pid), "the source is still alive");
        long n = w.Ticks().Last().N;
        Assert.True(Poll.Until(() => w.Ticks().Last().N > n + 3), "the migrated process does not tick");
    }

    [Criu4Fact]
    public void Criu4_lazy_pages_fetches_from_crisp_dump_lazy_pages()
    {
        using var pipes = new Criu4.PipeMaxSize();
        using var dir = new TempDir();
        using var w = new Memtouch(dir, mib: 64);
        using var dump = new BackgroundCrisp(dir, "dump", "dump", "-t", S(w.Pid), "-D", dir["src"], "--lazy-pages", "--address", "127.0.0.1", "--port", "0", "-v4");
        int port = dump.Port("lazy page server listening on");
        CopyImages(dir["src"], dir["dst"]);

        using var lazy = new CriuCommand(dir, "lazy", "lazy-pages", "-D", dir["dst"], "--page-server", "--address", "127.0.0.1",
            "--port", S(port), "-o", dir["lazy.log"], "-v4");
        Assert.True(Poll.Until(() => File.Exists(Path.Combine(dir["dst"], "lazy-pages.socket")) || lazy.Exited, 30_000),
            $"criu4 lazy-pages never listened:\n{Tail(dir["lazy.log"])}\n{lazy.Output}");
        using var restore = new BackgroundCrisp(dir, "restore", BackgroundCrisp.InNewPidNs, ["restore", "-D", dir["dst"], "--lazy-pages", "--pidfile", dir["restored.pid"]]);
        int moved = WaitOuterPid(w.Pid, restore, dir["restored.pid"]);
        w.Adopt(moved);

        Assert.StartsWith("check ok", w.Check(moved));
        Assert.True(lazy.WaitExit(TimeSpan.FromSeconds(60)) == 0, $"criu4 lazy-pages:\n{Tail(dir["lazy.log"])}\n{lazy.Output}");
        Assert.True(dump.WaitExit(TimeSpan.FromSeconds(60)) == 0, dump.Output);
        Assert.True(Gone(w.Pid), "the source is still alive");
    }

    private static string Tail(string log) => string.Join("\n", Poll.ReadFile(log).Split('\n').TakeLast(30));
}

/// <summary>A <c>criu4</c> command in the background: its pid and output; Dispose kills exactly it.</summary>
internal sealed class CriuCommand : IDisposable
{
    private readonly int _pid;
    private readonly string _stdout, _stderr;
    private int? _status;

    public CriuCommand(TempDir dir, string name, params string[] args)
    {
        _stdout = dir[$"{name}.out"];
        _stderr = dir[$"{name}.err"];
        _pid = ProcessSpawner.Spawn(new SpawnOptions
        {
            Path = Criu4.Path!,
            Argv = [Criu4.Path!, .. args],
            Envp = ["PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "HOME=/root"],
            Stdin = StdioSource.DevNull(false),
            Stdout = StdioSource.FromFile(_stdout, LibC.O_WRONLY | LibC.O_CREAT | LibC.O_TRUNC),
            Stderr = StdioSource.FromFile(_stderr, LibC.O_WRONLY | LibC.O_CREAT | LibC.O_TRUNC),
        });
    }

    public string Output => $"stdout: {Poll.ReadFile(_stdout)}\nstderr: {Poll.ReadFile(_stderr)}";

    public bool Exited
    {
        get
        {
            if (_status is not null) return true;
            int s = ProcessSpawner.Wait(_pid, LibC.WNOHANG);
            if (s >= 0) _status = s;
            return _status is not null;
        }
    }

    /// <summary>Waits for the exit; returns the exit code (128+signal if killed).</summary>
    public int WaitExit(TimeSpan timeout)
    {
        if (!Poll.Until(() => Exited, (int)timeout.TotalMilliseconds))
            throw new TimeoutException($"criu4 {_pid} still running after {timeout.TotalSeconds} s:\n{Output}");
        int s = _status!.Value;
        return LibC.WIFEXITED(s) ? LibC.WEXITSTATUS(s) : 128 + LibC.WTERMSIG(s);
    }

    public void Dispose()
    {
        if (Exited) return;
        LibC.kill(_pid, LibC.SIGKILL);
        ProcessSpawner.Wait(_pid);
    }
}
