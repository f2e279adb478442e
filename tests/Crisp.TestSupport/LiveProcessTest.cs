namespace Crisp.TestSupport;

/// <summary>
/// The base of a test class that starts real processes: a temp directory of its own and the pids
/// it started or restored (<see cref="Track"/>); Dispose kills exactly those, last first, then
/// runs <see cref="AfterKill"/> (daemons and other resources of the class), and removes the directory.
/// </summary>
public abstract class LiveProcessTest(string name) : IDisposable
{
    protected string Dir { get; } = TestProcesses.TempDir(name);
    protected List<int> Pids { get; } = [];

    protected int Track(int pid)
    {
        Pids.Add(pid);
        return pid;
    }

    /// <summary>What the class owns besides processes (lazy-pages daemons, servers), released once its processes are gone.</summary>
    protected virtual void AfterKill() { }

    public virtual void Dispose()
    {
        foreach (var pid in Enumerable.Reverse(Pids))
            if (Directory.Exists($"/proc/{pid}")) TestProcesses.KillAndReap(pid);
        AfterKill();
        try { Directory.Delete(Dir, true); } catch (IOException) { }
        GC.SuppressFinalize(this);
    }
}
