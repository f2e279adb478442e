using System.Diagnostics;
using Crisp.Images;
using Crisp.LazyPages;
using Crisp.Native;

namespace Crisp.LazyPages.Tests;

/// <summary>The pattern every test page carries: each 8-byte word is a function of its image address.</summary>
public static class Pattern
{
    public static ulong Word(ulong imageAddress) => imageAddress * 0x9E3779B97F4A7C15UL ^ 0x5EEDUL;

    public static void Fill(ulong vaddr, Span<byte> dst)
    {
        var words = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ulong>(dst);
        for (int i = 0; i < words.Length; i++) words[i] = Word(vaddr + (ulong)i * 8);
    }

    /// <summary>A page source serving the pattern for any pid; <paramref name="fail"/> may throw to simulate a lost source.</summary>
    public static MemoryPageSource Source(Action<ulong, int>? fail = null) => new((pid, vaddr, dst) =>
    {
        fail?.Invoke(vaddr, dst.Length);
        Fill(vaddr, dst);
    });
}

/// <summary>A daemon running on its own thread, ready when constructed (status fd seen).</summary>
public sealed unsafe class RunningDaemon : IDisposable
{
    public LazyPagesDaemon Daemon { get; }
    public string WorkDir { get; }
    public List<string> Log { get; } = new();
    private readonly Thread _thread;
    private readonly CancellationTokenSource _cancel = new();
    public int? ExitCode { get; private set; }
    public Exception? Crash { get; private set; }

    /// <param name="expectReady">false: the daemon is expected to give up before it listens (its status fd then closes without the byte)</param>
    public RunningDaemon(IPageSource source, Func<int, LazyPlan> planFor, LazyPagesPolicy? policy = null,
        TimeSpan? peerTimeout = null, bool expectReady = true, string? prefetchOrder = null, string? recordOrder = null)
    {
        WorkDir = Directory.CreateTempSubdirectory("crisp-lazy-").FullName;
        int* fds = stackalloc int[2];
        Errno.Check(LibC.pipe2(fds, LibC.O_CLOEXEC), "pipe2", "status pipe");
        int statusRead = fds[0];
        Daemon = new LazyPagesDaemon(new LazyPagesOptions
        {
            WorkDir = WorkDir,
            PageSource = source,
            PlanFor = planFor,
            StatusFd = fds[1],
            Log = Logger.Lines(line => { lock (Log) Log.Add(line); }),
            Policy = policy ?? new LazyPagesPolicy(),
            PeerTimeout = peerTimeout ?? TimeSpan.FromMinutes(5),
            PrefetchOrderPath = prefetchOrder,
            RecordOrderPath = recordOrder,
        });
        _thread = new Thread(() =>
        {
            try { ExitCode = Daemon.Run(_cancel.Token); }
            catch (Exception e) { Crash = e; }
        }) { IsBackground = true, Name = "daemon under test" };
        _thread.Start();
        byte b = 0xff;
        var pfd = new LibC.PollFd { fd = statusRead, events = LibC.POLLIN };
        int n = LibC.poll(&pfd, 1, expectReady ? 10_000 : 60_000);
        Assert.True(n == 1, expectReady ? "daemon did not report ready within 10 s" : "daemon neither reported ready nor closed its status fd within 60 s");
        if (expectReady)
        {
            Assert.Equal(1, (int)LibC.read(statusRead, &b, 1));
            Assert.Equal(0, b);
        }
        Assert.Equal(0, (int)LibC.read(statusRead, &b, 1)); // the daemon closed it
        LibC.close(statusRead);
    }

    public string SocketPath => Daemon.SocketPath;

    /// <summary>Asks Run to stop (what SIGTERM does to `crisp lazy-pages`).</summary>
    public void Cancel() => _cancel.Cancel();

    /// <summary>Waits for Run to return; false on timeout.</summary>
    public bool WaitExit(TimeSpan timeout) => _thread.Join(timeout);

    public string LogText { get { lock (Log) return string.Join("\n", Log); } }

    public void Dispose()
    {
        if (_thread.IsAlive)
        {
            _cancel.Cancel();
            _thread.Join(TimeSpan.FromSeconds(10));
        }
        Daemon.Dispose();
        try { Directory.Delete(WorkDir, true); } catch (IOException) { }
    }
}

/// <summary>The C programs under native/, compiled once per run (<see cref="Gcc.Workload"/>), and how they are run.</summary>
public static class NativePrograms
{
    public static string Build(string name) =>
        Gcc.Workload(name, Path.Combine(AppContext.BaseDirectory, "native", name + ".c"), "-Wall", "-Werror");

    /// <summary>Runs a program we built and returns (exit code, stdout, stderr); kills exactly it on timeout.</summary>
    public static (int Exit, string Out, string Err, bool TimedOut) Run(string path, TimeSpan timeout, params string[] args)
    {
        var psi = new ProcessStartInfo(path, args) { RedirectStandardOutput = true, RedirectStandardError = true };
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        bool done = p.WaitForExit(timeout);
        if (!done)
        {
            p.Kill(entireProcessTree: false);
            p.WaitForExit();
        }
        p.WaitForExit();
        return (p.ExitCode, stdout.Result, stderr.Result, !done);
    }
}
