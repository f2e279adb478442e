using System.Globalization;

namespace Crisp.LazyPages;

/// <summary>
/// Which NSpid column of a restored task its images use, when the restorer shares the daemon's pid
/// namespace and the task is in a namespace below it. The images carry the pids of the dumped
/// tree's root namespace. If the tree owned its pid namespace, crisp restored its root in a new one
/// directly below the restorer's (the root is then a child of the restorer): the column one below
/// ours. If the root stayed in the restorer's namespace and the task is in a pid namespace nested
/// in the tree (crisp-nested-pids.img), the images use the pid here.
/// </summary>
internal static class TreePidLevel
{
    /// <summary>The pid naming the task's plan; <paramref name="pid"/> itself when the tree's root is in our namespace.</summary>
    public static int DumpedPid(int pid, int restorerPid)
    {
        int ours = NsPids(Read("/proc/self/status")).Length;
        // The task's topmost ancestor that is below our namespace: the restored root if the tree owned one.
        int top = pid;
        for (int i = 0; i < 4096; i++)
        {
            int parent = PPid(Read($"/proc/{top}/status"));
            if (parent <= 0 || NsPids(Read($"/proc/{parent}/status")).Length <= ours) break;
            top = parent;
        }
        int topParent = PPid(Read($"/proc/{top}/status"));
        var levels = NsPids(Read($"/proc/{pid}/status"));
        return topParent == restorerPid && restorerPid > 0 && levels.Length > ours ? levels[ours] : pid;
    }

    private static int[] NsPids(string? status) => Field(status, "NSpid");

    private static int PPid(string? status) => Field(status, "PPid") is [int p] ? p : 0;

    private static int[] Field(string? status, string name)
    {
        if (status is null) return [];
        foreach (var line in status.Split('\n'))
            if (line.StartsWith(name + ":", StringComparison.Ordinal))
                return line[(name.Length + 1)..].Split(['\t', ' '], StringSplitOptions.RemoveEmptyEntries)
                    .Select(s => int.Parse(s, CultureInfo.InvariantCulture)).ToArray();
        return [];
    }

    private static string? Read(string path)
    {
        try { return File.ReadAllText(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return null; }
    }
}
