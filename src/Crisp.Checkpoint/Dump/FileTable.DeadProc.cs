using System.Text.RegularExpressions;
using Crisp.Images.Proto;
using Crisp.Native;

namespace Crisp.Checkpoint.Dump;

/// <summary>
/// A file under /proc/PID of a process that is gone (a cwd left in /proc/PID after PID died, zdtm
/// unhashed_proc): recorded as CRIU does, the path in the regular entry and a remap of type
/// PROCFS naming the dead pid. Restore stands a short-lived helper in for the dead process
/// (Restore/RestoreDeadProc.cs).
/// </summary>
internal sealed partial class FileTable
{
    [GeneratedRegex(@"^/proc/(\d+)(/.*)?$")]
    private static partial Regex ProcPidPath();

    private void AddDeadProcRemap(uint fileId, string path, string where)
    {
        var m = ProcPidPath().Match(path);
        if (!m.Success)
            throw new CrispException($"{where} is a deleted /proc entry ({path}) that is not under a process's directory: not supported yet");
        uint pid = uint.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
        // One remap per entry (CRIU writes one per dead pid and opens the others under the helper
        // it made with that pid; crisp's stand-in has a pid of its own, so each entry says where it is).
        _remaps.Add(new RemapFilePathEntry { OrigId = fileId, RemapId = pid, RemapType = RemapType.Procfs });
        Log.I($"{where}: a /proc entry of the dead process {pid}, restored under a stand-in process");
    }
}
