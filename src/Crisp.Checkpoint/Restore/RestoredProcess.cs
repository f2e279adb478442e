using Crisp.Native;

namespace Crisp.Checkpoint.Restore;

public sealed class RestoredProcess
{
    internal RestoredProcess(int pid, IReadOnlyList<int> pids, TimeSpan elapsed)
    {
        Pid = pid;
        Pids = pids;
        Elapsed = elapsed;
    }

    /// <summary>The root's pid (its original pid). Its parent is the restoring process.</summary>
    public int Pid { get; }
    /// <summary>Every restored process, root first.</summary>
    public IReadOnlyList<int> Pids { get; }
    /// <summary>How long each step of the sequence took (for -v and benchmarks).</summary>
    public IReadOnlyList<(string Step, TimeSpan Took)> Steps { get; init; } = [];

    /// <summary>Time from the start of Restore until the tree ran.</summary>
    public TimeSpan Elapsed { get; }

    /// <summary>Blocks until the root exits; returns its raw wait status (the root is a child of this process).</summary>
    public int WaitForExitStatus() => ProcessSpawner.Wait(Pid);

    /// <summary>Waits for the root; its exit code, or 128 + signal when it was killed (as a shell reports it).</summary>
    public int WaitForExit()
    {
        int s = WaitForExitStatus();
        return LibC.WIFEXITED(s) ? LibC.WEXITSTATUS(s) : 128 + LibC.WTERMSIG(s);
    }
}
