namespace Crisp.Native.ProcFs;

/// <summary>/proc/PID/auxv: (type, value) u64 pairs ending with AT_NULL.</summary>
public static class Auxv
{
    public const ulong AT_NULL = 0, AT_PHDR = 3, AT_PHENT = 4, AT_PHNUM = 5, AT_PAGESZ = 6, AT_BASE = 7,
        AT_ENTRY = 9, AT_UID = 11, AT_HWCAP = 16, AT_CLKTCK = 17, AT_SECURE = 23, AT_RANDOM = 25,
        AT_HWCAP2 = 26, AT_EXECFN = 31, AT_SYSINFO_EHDR = 33, AT_MINSIGSTKSZ = 51;

    /// <summary>Parses the raw bytes; the terminating AT_NULL pair is included.</summary>
    public static List<(ulong Type, ulong Value)> Parse(ReadOnlySpan<byte> raw)
    {
        var list = new List<(ulong, ulong)>();
        for (int i = 0; i + 16 <= raw.Length; i += 16)
        {
            ulong t = BitConverter.ToUInt64(raw[i..]);
            ulong v = BitConverter.ToUInt64(raw[(i + 8)..]);
            list.Add((t, v));
            if (t == AT_NULL) break;
        }
        return list;
    }

    /// <summary>The raw auxv as u64 words (what CRIU's mm image stores as mm_saved_auxv).</summary>
    public static ulong[] ReadWords(int pid)
    {
        var raw = File.ReadAllBytes($"/proc/{pid}/auxv");
        var pairs = Parse(raw);
        var words = new ulong[pairs.Count * 2];
        for (int i = 0; i < pairs.Count; i++) { words[2 * i] = pairs[i].Type; words[2 * i + 1] = pairs[i].Value; }
        return words;
    }
}
