using System.Globalization;

namespace Crisp.Native.ProcFs;

/// <summary>/proc/PID/status (the fields crisp uses; every field is kept raw in <see cref="Fields"/>).</summary>
public sealed record ProcStatus
{
    public string Name { get; init; } = "";
    public char State { get; init; }
    public int Tgid { get; init; }
    public int Pid { get; init; }
    public int PPid { get; init; }
    public int TracerPid { get; init; }
    /// <summary>Real, effective, saved, filesystem.</summary>
    public uint[] Uid { get; init; } = new uint[4];
    public uint[] Gid { get; init; } = new uint[4];
    public uint[] Groups { get; init; } = [];
    /// <summary>Outermost namespace first, own namespace last.</summary>
    public int[] NSpid { get; init; } = [];
    public int[] NStgid { get; init; } = [];
    public int[] NSpgid { get; init; } = [];
    public int[] NSsid { get; init; } = [];
    public int Threads { get; init; }
    public ulong SigPnd { get; init; }
    public ulong ShdPnd { get; init; }
    public ulong SigBlk { get; init; }
    public ulong SigIgn { get; init; }
    public ulong SigCgt { get; init; }
    public ulong CapInh { get; init; }
    public ulong CapPrm { get; init; }
    public ulong CapEff { get; init; }
    public ulong CapBnd { get; init; }
    public ulong CapAmb { get; init; }
    public int NoNewPrivs { get; init; }
    /// <summary>0 disabled, 1 strict, 2 filter.</summary>
    public int Seccomp { get; init; }
    public IReadOnlyDictionary<string, string> Fields { get; init; } = new Dictionary<string, string>();

    public static ProcStatus Parse(string text)
    {
        var f = new Dictionary<string, string>();
        foreach (var line in text.AsSpan().EnumerateLines())
        {
            int c = line.IndexOf(':');
            if (c <= 0) continue;
            f[line[..c].ToString()] = line[(c + 1)..].Trim().ToString();
        }
        string S(string k) => f.TryGetValue(k, out var v) ? v : "";
        int I(string k) => f.TryGetValue(k, out var v) && v.Length > 0 ? int.Parse(v, CultureInfo.InvariantCulture) : 0;
        ulong X(string k) => f.TryGetValue(k, out var v) && v.Length > 0 ? ulong.Parse(v, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture) : 0;
        T[] L<T>(string k, Func<string, T> p) => S(k).Split([' ', '\t'], StringSplitOptions.RemoveEmptyEntries).Select(p).ToArray();
        uint U(string s) => uint.Parse(s, CultureInfo.InvariantCulture);
        int N(string s) => int.Parse(s, CultureInfo.InvariantCulture);
        var state = S("State");
        return new ProcStatus
        {
            Name = S("Name"),
            State = state.Length > 0 ? state[0] : '?',
            Tgid = I("Tgid"), Pid = I("Pid"), PPid = I("PPid"), TracerPid = I("TracerPid"),
            Uid = L("Uid", U), Gid = L("Gid", U), Groups = L("Groups", U),
            NSpid = L("NSpid", N), NStgid = L("NStgid", N), NSpgid = L("NSpgid", N), NSsid = L("NSsid", N),
            Threads = I("Threads"),
            SigPnd = X("SigPnd"), ShdPnd = X("ShdPnd"), SigBlk = X("SigBlk"), SigIgn = X("SigIgn"), SigCgt = X("SigCgt"),
            CapInh = X("CapInh"), CapPrm = X("CapPrm"), CapEff = X("CapEff"), CapBnd = X("CapBnd"), CapAmb = X("CapAmb"),
            NoNewPrivs = I("NoNewPrivs"), Seccomp = I("Seccomp"),
            Fields = f,
        };
    }
}
