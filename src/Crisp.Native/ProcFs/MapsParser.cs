using System.Globalization;

namespace Crisp.Native.ProcFs;

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
