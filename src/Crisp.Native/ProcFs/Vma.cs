using System.Globalization;

namespace Crisp.Native.ProcFs;

/// <summary>The VmFlags letters of /proc/PID/smaps (fs/proc/task_mmu.c, show_smap_vma_flags).</summary>
[Flags]
public enum VmFlags : ulong
{
    None = 0,
    rd = 1UL << 0, wr = 1UL << 1, ex = 1UL << 2, sh = 1UL << 3, mr = 1UL << 4, mw = 1UL << 5,
    me = 1UL << 6, ms = 1UL << 7, gd = 1UL << 8, pf = 1UL << 9, lo = 1UL << 10, io = 1UL << 11,
    sr = 1UL << 12, rr = 1UL << 13, dc = 1UL << 14, de = 1UL << 15, ac = 1UL << 16, nr = 1UL << 17,
    ht = 1UL << 18, sf = 1UL << 19, ar = 1UL << 20, wf = 1UL << 21, dd = 1UL << 22, sd = 1UL << 23,
    mm = 1UL << 24, hg = 1UL << 25, nh = 1UL << 26, mg = 1UL << 27, um = 1UL << 28, uw = 1UL << 29,
    ss = 1UL << 30, sl = 1UL << 31, ui = 1UL << 32, bt = 1UL << 33, mt = 1UL << 34, lf = 1UL << 35,
    /// <summary>Any letter pair this enum does not know; the raw list is in <see cref="Vma.RawVmFlags"/>.</summary>
    Unknown = 1UL << 63,
}

/// <summary>One line of /proc/PID/maps, optionally with its smaps details.</summary>
public sealed record Vma
{
    public ulong Start { get; init; }
    public ulong End { get; init; }
    /// <summary>PROT_READ|PROT_WRITE|PROT_EXEC bits.</summary>
    public int Prot { get; init; }
    /// <summary>'s' in the perms column (MAP_SHARED), else 'p'.</summary>
    public bool Shared { get; init; }
    public ulong Offset { get; init; }
    public uint DevMajor { get; init; }
    public uint DevMinor { get; init; }
    public ulong Inode { get; init; }
    /// <summary>The path column as printed, minus a " (deleted)" suffix; "" for anonymous.</summary>
    public string Path { get; init; } = "";
    /// <summary>The mapped file was unlinked (the kernel printed " (deleted)").</summary>
    public bool Deleted { get; init; }

    // ---- smaps only ----
    public VmFlags Flags { get; init; }
    public IReadOnlyList<string> RawVmFlags { get; init; } = [];
    /// <summary>Size fields of smaps in kB ("Rss", "Anonymous", "Swap", ...).</summary>
    public IReadOnlyDictionary<string, ulong> SmapsKb { get; init; } = new Dictionary<string, ulong>();

    public ulong Length => End - Start;
    public bool IsAnonymous => Inode == 0 && (Path.Length == 0 || Path[0] == '[');
    /// <summary>[heap], [stack], [vdso], [vvar], [vvar_vclock], [vsyscall], [anon:name] ...</summary>
    public bool IsSpecial => Path.StartsWith('[');
    public bool IsVdso => Path == "[vdso]";
    public bool IsVvar => Path is "[vvar]" or "[vvar_vclock]";
    public bool IsVsyscall => Path == "[vsyscall]";

    public override string ToString()
    {
        var perms = string.Concat((Prot & 1) != 0 ? "r" : "-", (Prot & 2) != 0 ? "w" : "-", (Prot & 4) != 0 ? "x" : "-", Shared ? "s" : "p");
        return $"{Start:x}-{End:x} {perms} {Offset:x8} {Path}{(Deleted ? " (deleted)" : "")}";
    }
}

/// <summary>Parsers for /proc/PID/maps and /proc/PID/smaps.</summary>
public static class MapsParser
{
    private const string DeletedSuffix = " (deleted)";

    /// <summary>Parses one maps line: "start-end perms offset maj:min inode   path".</summary>
    public static Vma ParseLine(ReadOnlySpan<char> line)
    {
        int pos = 0;
        var range = Next(line, ref pos);
        var perms = Next(line, ref pos);
        var offset = Next(line, ref pos);
        var dev = Next(line, ref pos);
        var inode = Next(line, ref pos);
        // The path starts after the padding that follows the inode; it may contain spaces.
        while (pos < line.Length && line[pos] == ' ') pos++;
        var path = line[pos..].ToString();

        int dash = range.IndexOf('-');
        int colon = dev.IndexOf(':');
        if (dash < 0 || colon < 0 || perms.Length < 4) throw new FormatException($"bad maps line: {line.ToString()}");
        bool deleted = false;
        if (path.EndsWith(DeletedSuffix, StringComparison.Ordinal))
        {
            deleted = true;
            path = path[..^DeletedSuffix.Length];
        }
        return new Vma
        {
            Start = Hex(range[..dash]),
            End = Hex(range[(dash + 1)..]),
            Prot = (perms[0] == 'r' ? LibC.PROT_READ : 0) | (perms[1] == 'w' ? LibC.PROT_WRITE : 0) | (perms[2] == 'x' ? LibC.PROT_EXEC : 0),
            Shared = perms[3] == 's',
            Offset = Hex(offset),
            DevMajor = (uint)Hex(dev[..colon]),
            DevMinor = (uint)Hex(dev[(colon + 1)..]),
            Inode = ulong.Parse(inode, CultureInfo.InvariantCulture),
            Path = path.Replace("\\012", "\n"),
            Deleted = deleted,
        };
    }

    public static List<Vma> ParseMaps(string text)
    {
        var list = new List<Vma>();
        foreach (var line in text.AsSpan().EnumerateLines())
            if (!line.IsEmpty) list.Add(ParseLine(line));
        return list;
    }

    /// <summary>Parses smaps: a maps line, then "Key: value [kB]" lines, the last being VmFlags.</summary>
    public static List<Vma> ParseSmaps(string text)
    {
        var list = new List<Vma>();
        Vma? cur = null;
        Dictionary<string, ulong>? kb = null;
        foreach (var line in text.AsSpan().EnumerateLines())
        {
            if (line.IsEmpty) continue;
            if (IsHeader(line))
            {
                if (cur is not null) list.Add(cur with { SmapsKb = kb! });
                cur = ParseLine(line);
                kb = new Dictionary<string, ulong>();
                continue;
            }
            if (cur is null) throw new FormatException($"smaps field before any mapping: {line.ToString()}");
            int c = line.IndexOf(':');
            if (c < 0) continue;
            var key = line[..c].ToString();
            var val = line[(c + 1)..].Trim();
            if (key == "VmFlags")
            {
                var raw = val.ToString().Split(' ', StringSplitOptions.RemoveEmptyEntries);
                cur = cur with { RawVmFlags = raw, Flags = ParseVmFlags(raw) };
            }
            else
            {
                if (val.EndsWith(" kB")) val = val[..^3];
                if (ulong.TryParse(val, NumberStyles.None, CultureInfo.InvariantCulture, out var v)) kb![key] = v;
            }
        }
        if (cur is not null) list.Add(cur with { SmapsKb = kb! });
        return list;
    }

    public static VmFlags ParseVmFlags(IEnumerable<string> letters)
    {
        VmFlags f = VmFlags.None;
        foreach (var l in letters)
            f |= Enum.TryParse<VmFlags>(l, false, out var one) && l.Length == 2 && !char.IsDigit(l[0]) ? one : VmFlags.Unknown;
        return f;
    }

    // A mapping header starts "hex-hex "; field lines start with a capitalised key.
    private static bool IsHeader(ReadOnlySpan<char> line)
    {
        int dash = line.IndexOf('-');
        if (dash <= 0) return false;
        int sp = line.IndexOf(' ');
        if (sp < dash) return false;
        foreach (var ch in line[..dash]) if (!char.IsAsciiHexDigit(ch)) return false;
        return true;
    }

    private static ReadOnlySpan<char> Next(ReadOnlySpan<char> line, ref int pos)
    {
        while (pos < line.Length && line[pos] == ' ') pos++;
        int start = pos;
        while (pos < line.Length && line[pos] != ' ') pos++;
        if (pos == start) throw new FormatException($"short maps line: {line.ToString()}");
        return line[start..pos];
    }

    private static ulong Hex(ReadOnlySpan<char> s) => ulong.Parse(s, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture);
}
