using System.Globalization;

namespace Crisp.Native.ProcFs;

/// <summary>/proc/PID/stat. Field numbers in comments are proc(5)'s, 1-based.</summary>
public sealed record ProcStat
{
    public int Pid { get; init; }          // 1
    public string Comm { get; init; } = ""; // 2
    public char State { get; init; }       // 3
    public int PPid { get; init; }         // 4
    public int Pgrp { get; init; }         // 5
    public int Session { get; init; }      // 6
    public int TtyNr { get; init; }        // 7
    public int Tpgid { get; init; }        // 8
    public uint Flags { get; init; }       // 9
    public ulong Utime { get; init; }      // 14
    public ulong Stime { get; init; }      // 15
    public long Priority { get; init; }    // 18
    public long Nice { get; init; }        // 19
    public long NumThreads { get; init; }  // 20
    public ulong StartTime { get; init; }  // 22
    public ulong Vsize { get; init; }      // 23
    public ulong StartCode { get; init; }  // 26
    public ulong EndCode { get; init; }    // 27
    public ulong StartStack { get; init; } // 28
    public int ExitSignal { get; init; }   // 38
    public int Processor { get; init; }    // 39
    public ulong StartData { get; init; }  // 45
    public ulong EndData { get; init; }    // 46
    public ulong StartBrk { get; init; }   // 47
    public ulong ArgStart { get; init; }   // 48
    public ulong ArgEnd { get; init; }     // 49
    public ulong EnvStart { get; init; }   // 50
    public ulong EnvEnd { get; init; }     // 51
    public int ExitCode { get; init; }     // 52
    /// <summary>All fields from 3 on, as text; index 0 is field 3.</summary>
    public IReadOnlyList<string> Rest { get; init; } = [];

    public static ProcStat Parse(string text)
    {
        // comm may hold spaces and parentheses: it runs from the first '(' to the LAST ')'.
        int open = text.IndexOf('(');
        int close = text.LastIndexOf(')');
        if (open < 0 || close < open) throw new FormatException("bad stat: no (comm)");
        var rest = text[(close + 1)..].Split(' ', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        string F(int n) => n - 3 < rest.Length ? rest[n - 3] : "0";
        long L(int n) => long.Parse(F(n), CultureInfo.InvariantCulture);
        ulong U(int n) => ulong.Parse(F(n), CultureInfo.InvariantCulture);
        return new ProcStat
        {
            Pid = int.Parse(text.AsSpan(0, open).Trim(), CultureInfo.InvariantCulture),
            Comm = text[(open + 1)..close],
            State = F(3)[0],
            PPid = (int)L(4), Pgrp = (int)L(5), Session = (int)L(6), TtyNr = (int)L(7), Tpgid = (int)L(8),
            Flags = (uint)U(9), Utime = U(14), Stime = U(15), Priority = L(18), Nice = L(19), NumThreads = L(20),
            StartTime = U(22), Vsize = U(23), StartCode = U(26), EndCode = U(27), StartStack = U(28),
            ExitSignal = (int)L(38), Processor = (int)L(39),
            StartData = U(45), EndData = U(46), StartBrk = U(47), ArgStart = U(48), ArgEnd = U(49),
            EnvStart = U(50), EnvEnd = U(51), ExitCode = (int)L(52),
            Rest = rest,
        };
    }
}
