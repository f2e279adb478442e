namespace Crisp.TestSupport;

/// <summary>
/// The base of a test class that starts real processes: a temp directory of its own and the pids
/// it started or restored (<see cref="Track"/>); Dispose kills exactly those, last first, and
/// removes the directory.
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

    public virtual void Dispose()
    {
        foreach (var pid in Enumerable.Reverse(Pids))
            if (Directory.Exists($"/proc/{pid}")) TestProcesses.KillAndReap(pid);
        try { Directory.Delete(Dir, true); } catch (IOException) { }
        GC.SuppressFinalize(this);
    }
}
