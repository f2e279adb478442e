using Crisp.Native;

namespace Crisp.TestSupport;

/// <summary>
/// A process this test started (posix_spawn). Dispose kills exactly this pid and reaps it.
/// </summary>
public sealed class ChildProcess : IDisposable
{
    private bool _reaped;

    public int Pid { get; }

    private ChildProcess(int pid) => Pid = pid;

    public static ChildProcess Start(string path, IReadOnlyList<string>? args = null, string? stdoutFile = null, bool newSession = false)
    {
        var argv = new List<string> { path };
        if (args != null) argv.AddRange(args);
        int pid = ProcessSpawner.Spawn(new SpawnOptions
        {
            Path = path,
            Argv = argv,
            Envp = ["PATH=/usr/bin:/bin"],
            Stdin = StdioSource.DevNull(false),
            Stdout = stdoutFile is null ? StdioSource.DevNull(true) : StdioSource.FromFile(stdoutFile, LibC.O_WRONLY | LibC.O_CREAT | LibC.O_TRUNC),
            Stderr = StdioSource.DevNull(true),
            NewSession = newSession,
        });
        return new ChildProcess(pid);
    }

    public static ChildProcess Adopt(int pid) => new(pid);

    public bool IsAlive => !_reaped && File.Exists($"/proc/{Pid}/stat") && Crisp.Native.ProcFs.Proc.Stat(Pid).State != 'Z';

    /// <summary>Waits for exit; returns the raw status.</summary>
    public int WaitExit()
    {
        int s = ProcessSpawner.Wait(Pid);
        _reaped = true;
        return s;
    }

    public void Dispose()
    {
        if (_reaped) return;
        LibC.kill(Pid, LibC.SIGKILL);
        try { ProcessSpawner.Wait(Pid, LibC.__WALL); } catch (SyscallException) { }
        _reaped = true;
    }
}
