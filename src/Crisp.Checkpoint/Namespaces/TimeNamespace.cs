using System.Globalization;
using Crisp.Images.Proto;
using Crisp.Native;

namespace Crisp.Checkpoint.Namespaces;

/*
 * A time namespace the tree owns (CRIU's timens-ID.img, criu/timens.c for the facts).
 *
 * The image holds CLOCK_MONOTONIC and CLOCK_BOOTTIME as the tree saw them when it was dumped:
 * crisp's clock minus crisp's own namespace offsets plus the tree's (/proc/PID/timens_offsets).
 * Restore makes the namespace in the stub with unshare(CLONE_NEWTIME), which applies to the
 * stub's children only, and writes the offsets into /proc/STUB/timens_offsets before the first
 * child (the root) is made: from then the kernel refuses changes. The offsets make both clocks
 * inside continue from the dumped values, on any host: the frozen time does not show, and the
 * clocks never go backwards.
 */
internal static class TimeNamespace
{
    private const int CLOCK_MONOTONIC = 1, CLOCK_BOOTTIME = 7;

    /// <summary>The clocks as the tree of <paramref name="pid"/> sees them now.</summary>
    public static TimensEntry Dump(int pid)
    {
        string pidText = pid.ToString(CultureInfo.InvariantCulture);
        // The offsets shown are those of the namespace the task's children get: the tree's own
        // only if the root did not unshare another one for them.
        if (LibC.Stat($"/proc/{pidText}/ns/time").st_ino != LibC.Stat($"/proc/{pidText}/ns/time_for_children").st_ino)
            throw new CrispException($"process {pid} made a time namespace for its children (unshare(CLONE_NEWTIME) without a fork): not supported");
        var mine = Offsets("self");
        var theirs = Offsets(pidText);
        return new TimensEntry
        {
            Monotonic = Inside(CLOCK_MONOTONIC, mine.Monotonic, theirs.Monotonic),
            Boottime = Inside(CLOCK_BOOTTIME, mine.Boottime, theirs.Boottime),
        };
    }

    private static Timespec Inside(int clock, long mineNs, long theirsNs)
    {
        long ns = Now(clock) - mineNs + theirsNs;
        if (ns < 0) throw new CrispException($"clock {clock} of the tree's time namespace reads negative ({ns} ns)");
        return new Timespec { TvSec = (ulong)(ns / 1_000_000_000), TvNsec = (ulong)(ns % 1_000_000_000) };
    }

    /// <summary>
    /// Sets the offsets of the time namespace <paramref name="stubPid"/> made for its children,
    /// so that the clocks inside read what the image says (the stub has not forked yet).
    /// </summary>
    public static void SetOffsets(int stubPid, TimensEntry dumped)
    {
        // Offsets are against the host's clocks; crisp's own read with its namespace's offsets.
        var mine = Offsets("self");
        long mono = Ns(dumped.Monotonic) - (Now(CLOCK_MONOTONIC) - mine.Monotonic);
        long boot = Ns(dumped.Boottime) - (Now(CLOCK_BOOTTIME) - mine.Boottime);
        string text = $"{CLOCK_MONOTONIC} {Text(mono)}\n{CLOCK_BOOTTIME} {Text(boot)}\n";
        string path = $"/proc/{stubPid}/timens_offsets";
        try { File.WriteAllText(path, text); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new CrispException($"cannot write the time namespace offsets ({text.Replace('\n', ';')}) to {path}: {e.Message}", e);
        }
        Log.I($"time namespace: CLOCK_MONOTONIC offset {Text(mono)}, CLOCK_BOOTTIME offset {Text(boot)} (s ns)");
    }

    private static long Ns(Timespec t) => checked((long)t.TvSec * 1_000_000_000 + (long)t.TvNsec);

    /// <summary>"sec nsec" with nsec in [0, 1e9), as the kernel reads it.</summary>
    private static string Text(long ns)
    {
        long sec = Math.DivRem(ns, 1_000_000_000, out long rem);
        if (rem < 0) { sec--; rem += 1_000_000_000; }
        return string.Create(CultureInfo.InvariantCulture, $"{sec} {rem}");
    }

    private static unsafe long Now(int clock)
    {
        long* ts = stackalloc long[2];
        Errno.Check(LibC.Syscall(LibC.SYS_clock_gettime, clock, (long)ts), "clock_gettime", $"clock {clock}");
        return ts[0] * 1_000_000_000 + ts[1];
    }


    /// <summary>/proc/ENTRY/timens_offsets: "monotonic SEC NSEC" and "boottime SEC NSEC", in ns.</summary>
    private static (long Monotonic, long Boottime) Offsets(string procEntry)
    {
        long mono = 0, boot = 0;
        foreach (var line in File.ReadAllLines($"/proc/{procEntry}/timens_offsets"))
        {
            var f = line.Split([' ', '\t'], StringSplitOptions.RemoveEmptyEntries);
            if (f.Length != 3) continue;
            long v = long.Parse(f[1], CultureInfo.InvariantCulture) * 1_000_000_000 + long.Parse(f[2], CultureInfo.InvariantCulture);
            if (f[0] is "monotonic" or "1") mono = v;
            else if (f[0] is "boottime" or "7") boot = v;
        }
        return (mono, boot);
    }
}
