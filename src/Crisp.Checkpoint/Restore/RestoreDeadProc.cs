using System.Text.RegularExpressions;
using Crisp.Images.Proto;
using Crisp.Native;

namespace Crisp.Checkpoint.Restore;

/// <summary>
/// A file under /proc/PID of a process that was gone at dump time (CRIU's PROCFS remap: a cwd
/// left in /proc/PID after PID died). A helper process stands in for the dead one while the
/// tasks get their files and fs (a /proc directory of a dead process cannot be entered: its
/// permission check fails with ESRCH), and is killed and reaped before they resume. That leaves
/// the entry as the dumped one was: a /proc directory of a dead process, "(deleted)", where
/// getcwd fails with ENOENT. Unlike CRIU, which makes the helper with the dead pid itself, the
/// pid in the entry's name is the helper's.
/// </summary>
internal sealed unsafe partial class RestoreSession
{

    [GeneratedRegex(@"^/proc/(\d+)(/.*)?$")]
    private static partial Regex DeadProcPath();

    /// <returns>the path the tasks open the entry by</returns>
    private string DeadProcEntry(RemapFilePathEntry r, string path)
    {
        var m = DeadProcPath().Match(path);
        if (!m.Success || m.Groups[1].Value != r.RemapId.ToString(System.Globalization.CultureInfo.InvariantCulture))
            throw new CrispException($"file {r.OrigId} ({path}) is remapped to the dead process {r.RemapId}, but its path is not under /proc/{r.RemapId}");
        int helper = ProcessSpawner.Spawn(new SpawnOptions
        {
            Path = "/bin/sleep", Argv = ["sleep", "3600"],
            Stdin = StdioSource.DevNull(false), Stdout = StdioSource.DevNull(true), Stderr = StdioSource.DevNull(true),
        });
        _c.DeadProcHelpers.Add(helper);
        string here = $"/proc/{helper}{m.Groups[2].Value}";
        Log.D($"restore: {path} of the dead process {r.RemapId} stands in as {here} until the tree resumes");
        return here;
    }

    /// <summary>Kills and reaps the stand-ins: what the tasks entered under their /proc directories is a dead process's from now on.</summary>
    private void EndDeadProcHelpers()
    {
        foreach (int pid in _c.DeadProcHelpers)
        {
            LibC.kill(pid, LibC.SIGKILL);
            ProcessSpawner.Wait(pid);
        }
        _c.DeadProcHelpers.Clear();
    }
}
