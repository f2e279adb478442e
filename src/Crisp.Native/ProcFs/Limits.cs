using System.Globalization;

namespace Crisp.Native.ProcFs;

/// <summary>
/// /proc/PID/limits: the task's rlimits as text, one line per resource in RLIMIT order after a
/// header ("Max cpu time   unlimited   unlimited   seconds"). prlimit(2) on another process
/// needs CAP_SYS_RESOURCE when its credentials differ from the caller's (an nginx worker that
/// dropped to www-data); this file does not, and prints the same numbers.
/// </summary>
public static class Limits
{
    /// <summary>Width of the resource-name column (the kernel prints it "%-25s ").</summary>
    private const int NameColumn = 26;

    /// <summary>(soft, hard) per resource, RLIMIT order; "unlimited" is <see cref="LibC.RLIM_INFINITY"/>.</summary>
    public static List<(ulong Soft, ulong Hard)> Parse(string text)
    {
        var lines = text.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        if (lines.Length == 0 || !lines[0].StartsWith("Limit ", StringComparison.Ordinal))
            throw new FormatException("no 'Limit' header");
        var list = new List<(ulong, ulong)>();
        foreach (var line in lines.Skip(1))
        {
            if (line.Length <= NameColumn) throw new FormatException($"short line '{line}'");
            var f = line[NameColumn..].Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (f.Length < 2) throw new FormatException($"no soft and hard limit in '{line}'");
            list.Add((Value(f[0], line), Value(f[1], line)));
        }
        return list;
    }

    public static List<(ulong Soft, ulong Hard)> Read(int pid) => Parse(File.ReadAllText($"/proc/{pid}/limits"));

    private static ulong Value(string s, string line) =>
        s == "unlimited" ? LibC.RLIM_INFINITY
        : ulong.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture, out var v) ? v
        : throw new FormatException($"'{s}' is not a limit in '{line}'");
}
