using System.Globalization;

namespace Crisp.Native.ProcFs;

/// <summary>
/// One "lock:" line of /proc/PID/fdinfo/N (the kernel's lock_get_status):
/// "1: POSIX  ADVISORY  WRITE 5630 fe:00:11657396 5 14" — kind (POSIX, FLOCK, OFDLCK, LEASE,
/// DELEG…), mode (ADVISORY, MANDATORY; for a lease ACTIVE, BREAKING, BREAKER), type (READ,
/// WRITE, UNLCK), owner pid, major:minor:inode, first byte, last byte or EOF (End = -1).
/// </summary>
public sealed record FileLockLine(string Kind, string Mode, string Type, int Pid, ulong Ino, long Start, long End)
{
    /// <summary>The length fcntl takes: 0 means up to the end of the file.</summary>
    public long Length => End < 0 ? 0 : End - Start + 1;

    public static FileLockLine Parse(string line)
    {
        var w = line.Split([' ', '\t'], StringSplitOptions.RemoveEmptyEntries);
        int i = 0;
        if (w.Length > 0 && w[0].EndsWith(':')) i++;                 // "1:" the lock's index
        if (w.Length > i && w[i] == "->") i++;                        // a waiter ("1: -> POSIX ...")
        if (w.Length - i < 7) throw new FormatException($"fdinfo lock line '{line}': expected 7 fields after the index");
        string kind = w[i], mode = w[i + 1], type = w[i + 2];
        int pid = int.Parse(w[i + 3], CultureInfo.InvariantCulture);
        var dev = w[i + 4].Split(':');
        if (dev.Length != 3) throw new FormatException($"fdinfo lock line '{line}': expected major:minor:inode, got '{w[i + 4]}'");
        ulong ino = ulong.Parse(dev[2], CultureInfo.InvariantCulture);
        long start = long.Parse(w[i + 5], CultureInfo.InvariantCulture);
        long end = w[i + 6] == "EOF" ? -1 : long.Parse(w[i + 6], CultureInfo.InvariantCulture);
        return new FileLockLine(kind, mode, type, pid, ino, start, end);
    }

    /// <summary>Every lock line of a parsed fdinfo (its "lock" field, lines joined by '\n').</summary>
    public static List<FileLockLine> From(FdInfo info) =>
        info.Fields.TryGetValue("lock", out var text)
            ? text.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(Parse).ToList()
            : [];
}
