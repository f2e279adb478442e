using System.Diagnostics;
using System.Text.Json;
using Crisp.Integration.Tests.Support;
using Crisp.Native;

namespace Crisp.Integration.Tests.Lazy;

/// <summary>
/// `crisp lazy-pages` started the way CRIU's users start criu lazy-pages: by a shell, its
/// status fd redirected to a FIFO (`--status-fd 3 3>FIFO &`), readiness being the zero byte
/// read from the FIFO. Statistics go to a JSON file (--json FILE).
/// </summary>
internal sealed unsafe class LazyDaemon : IDisposable
{
    private readonly string _stderr, _json;
    private bool _exited;
    public int Pid { get; }
    public int ExitCode { get; private set; } = -1;

    public LazyDaemon(string images, string dir, string? workDir = null, string extraArgs = "")
    {
        string fifo = Path.Combine(dir, $"status-{Guid.NewGuid():N}"[..16]);
        _stderr = Path.Combine(dir, "lazy-pages.err");
        _json = Path.Combine(dir, "lazy-pages.json");
        string work = workDir == null ? "" : $" -W '{workDir}'";
        Pid = ProcessSpawner.Spawn(new SpawnOptions
        {
            Path = "/bin/bash",
            Argv = ["/bin/bash", "-c", $"mkfifo '{fifo}' && exec /usr/bin/dotnet '{CrispCli.Dll}' lazy-pages -D '{images}'{work} --status-fd 3 --json '{_json}' {extraArgs} 3>'{fifo}'"],
            Envp = ["PATH=/usr/bin:/bin", "HOME=/root", "DOTNET_CLI_TELEMETRY_OPTOUT=1", "DOTNET_NOLOGO=1"],
            Stdin = StdioSource.DevNull(false),
            Stdout = StdioSource.DevNull(true),
            Stderr = StdioSource.FromFile(_stderr, LibC.O_WRONLY | LibC.O_CREAT | LibC.O_TRUNC),
        });
        try { WaitReady(fifo); }
        catch { Dispose(); throw; }
        finally { File.Delete(fifo); }
    }

    private void WaitReady(string fifo)
    {
        var sw = Stopwatch.StartNew();
        int fd = -1;
        try
        {
            while (sw.Elapsed < TimeSpan.FromSeconds(60))
            {
                if (fd < 0 && File.Exists(fifo)) fd = LibC.open(fifo, LibC.O_RDONLY | LibC.O_NONBLOCK | LibC.O_CLOEXEC, 0);
                if (fd >= 0)
                {
                    byte b;
                    if (LibC.read(fd, &b, 1) == 1)
                    {
                        if (b != 0) throw new InvalidOperationException($"lazy-pages wrote status byte {b}, not 0");
                        return;
                    }
                }
                if (ProcessSpawner.Wait(Pid, LibC.WNOHANG) >= 0)
                {
                    _exited = true;
                    throw new InvalidOperationException($"lazy-pages exited before it was ready: {Stderr}");
                }
                Thread.Sleep(5);
            }
            throw new TimeoutException("lazy-pages never wrote its status byte");
        }
        finally { if (fd >= 0) LibC.close(fd); }
    }

    public string Stderr => File.Exists(_stderr) ? File.ReadAllText(_stderr) : "";

    /// <summary>Waits for the daemon to finish (every page delivered); its exit code.</summary>
    public int WaitExit(int timeoutMs = 60_000)
    {
        if (_exited) return ExitCode;
        int status = CrispCli.WaitWithTimeout(Pid, TimeSpan.FromMilliseconds(timeoutMs), "lazy-pages");
        _exited = true;
        ExitCode = LibC.WIFEXITED(status) ? LibC.WEXITSTATUS(status) : 128 + LibC.WTERMSIG(status);
        return ExitCode;
    }

    /// <summary>The --json statistics (after <see cref="WaitExit"/>).</summary>
    public JsonElement Stats()
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(_json));
        return doc.RootElement.Clone();
    }

    public long Stat(string name) => Stats().GetProperty(name).GetInt64();

    public void Dispose()
    {
        if (_exited) return;
        LibC.kill(Pid, LibC.SIGKILL);
        ProcessSpawner.Wait(Pid);
        _exited = true;
    }
}
