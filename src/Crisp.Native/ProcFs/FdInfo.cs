using System.Globalization;

namespace Crisp.Native.ProcFs;

/// <summary>/proc/PID/fdinfo/N: pos, flags (octal), mnt_id, ino, and any type-specific lines.</summary>
public sealed record FdInfo
{
    public long Pos { get; init; }
    /// <summary>Open flags (O_*), printed by the kernel in octal.</summary>
    public int Flags { get; init; }
    public int MntId { get; init; }
    public ulong Ino { get; init; }
    /// <summary>Every "key: value" line as text (eventfd-count, tfd, inotify ..., repeated keys joined by '\n').</summary>
    public IReadOnlyDictionary<string, string> Fields { get; init; } = new Dictionary<string, string>();

    public static FdInfo Parse(string text)
    {
        var f = new Dictionary<string, string>();
        foreach (var line in text.AsSpan().EnumerateLines())
        {
            int c = line.IndexOf(':');
            if (c <= 0) continue;
            var k = line[..c].ToString();
            var v = line[(c + 1)..].Trim().ToString();
            f[k] = f.TryGetValue(k, out var old) ? old + "\n" + v : v;
        }
        string S(string k) => f.TryGetValue(k, out var v) ? v : "0";
        return new FdInfo
        {
            Pos = long.Parse(S("pos"), CultureInfo.InvariantCulture),
            Flags = Convert.ToInt32(S("flags"), 8),
            MntId = int.Parse(S("mnt_id"), CultureInfo.InvariantCulture),
            Ino = ulong.Parse(S("ino"), CultureInfo.InvariantCulture),
            Fields = f,
        };
    }
}
