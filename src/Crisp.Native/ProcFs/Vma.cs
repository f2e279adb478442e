using System.Globalization;

namespace Crisp.Native.ProcFs;

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
