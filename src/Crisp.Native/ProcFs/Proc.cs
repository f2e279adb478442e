using System.Globalization;

namespace Crisp.Native.ProcFs;

/// <summary>Reading one process's /proc entries (pure parsing lives in the parser types).</summary>
public static class Proc
{
    public static string Dir(int pid) => $"/proc/{pid}";

    public static List<Vma> Maps(int pid) => MapsParser.ParseMaps(ReadText($"/proc/{pid}/maps"));
    public static List<Vma> Smaps(int pid) => MapsParser.ParseSmaps(ReadText($"/proc/{pid}/smaps"));
    public static ProcStatus Status(int pid) => ProcStatus.Parse(ReadText($"/proc/{pid}/status"));
    public static ProcStatus TaskStatus(int pid, int tid) => ProcStatus.Parse(ReadText($"/proc/{pid}/task/{tid}/status"));
    public static ProcStat Stat(int pid) => ProcStat.Parse(ReadText($"/proc/{pid}/stat"));
    public static ProcStat TaskStat(int pid, int tid) => ProcStat.Parse(ReadText($"/proc/{pid}/task/{tid}/stat"));

    /// <summary>Thread ids in /proc/PID/task, sorted (the leader first, since it has the lowest id only usually: callers should not rely on it).</summary>
    public static List<int> Tasks(int pid) => NumericEntries($"/proc/{pid}/task");

    /// <summary>Children of one thread (/proc/PID/task/TID/children, CONFIG_PROC_CHILDREN).</summary>
    public static List<int> TaskChildren(int pid, int tid) =>
        ReadText($"/proc/{pid}/task/{tid}/children").Split(' ', StringSplitOptions.RemoveEmptyEntries)
            .Select(s => int.Parse(s, CultureInfo.InvariantCulture)).ToList();

    /// <summary>Children of every thread of the process.</summary>
    public static List<int> Children(int pid)
    {
        var all = new List<int>();
        foreach (var tid in Tasks(pid))
        {
            try { all.AddRange(TaskChildren(pid, tid)); }
            catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException) { } // thread exited
        }
        return all;
    }

    /// <summary>Open fd numbers, sorted.</summary>
    public static List<int> Fds(int pid) => NumericEntries($"/proc/{pid}/fd");

    /// <summary>readlink of /proc/PID/fd/N ("/path", "pipe:[123]", "socket:[45]", "anon_inode:[eventfd]", ...).</summary>
    public static string FdTarget(int pid, int fd) => LibC.ReadLink($"/proc/{pid}/fd/{fd}");
    public static FdInfo FdInfo(int pid, int fd) => ProcFs.FdInfo.Parse(ReadText($"/proc/{pid}/fdinfo/{fd}"));
    public static string Cwd(int pid) => LibC.ReadLink($"/proc/{pid}/cwd");
    public static string Root(int pid) => LibC.ReadLink($"/proc/{pid}/root");
    public static string Exe(int pid) => LibC.ReadLink($"/proc/{pid}/exe");
    public static List<(ulong Type, ulong Value)> AuxvEntries(int pid) => Auxv.Parse(File.ReadAllBytes($"/proc/{pid}/auxv"));

    /// <summary>/proc files report size 0; read them in one go with a growing buffer.</summary>
    public static string ReadText(string path)
    {
        using var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, 1, FileOptions.None);
        using var sr = new StreamReader(fs);
        return sr.ReadToEnd();
    }

    private static List<int> NumericEntries(string dir)
    {
        var list = new List<int>();
        foreach (var e in Directory.EnumerateFileSystemEntries(dir))
        {
            var name = Path.GetFileName(e);
            if (int.TryParse(name, NumberStyles.None, CultureInfo.InvariantCulture, out var n)) list.Add(n);
        }
        list.Sort();
        return list;
    }
}
