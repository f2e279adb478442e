using System.Globalization;
using Crisp.Native;
using Crisp.TestSupport;

namespace Crisp.Integration.Tests.Support;

/// <summary>The C workloads in tests/workloads, compiled once per test run (<see cref="Gcc.Workload"/>).</summary>
public static class Workloads
{
    public static string Memtouch => Gcc.Workload("memtouch");

    public static string Dirtier => Gcc.Workload("dirtier");
}

/// <summary>
/// A running dirtier (tests/workloads/dirtier.c): MIB MiB it keeps rewriting at PERCENT% a
/// second, a tick line every 10 ms with the page writes so far, SIGUSR1 → "check ok|BAD" after
/// checking every page against its generation. Dispose kills the original and adopted pids.
/// </summary>
public sealed class Dirtier : IDisposable
{
    private readonly ChildProcess _child;
    private readonly List<int> _adopted = [];

    public string LogPath { get; }
    public int Pid => _child.Pid;

    public Dirtier(TempDir dir, int mib, double percentPerSecond, string name = "dirtier")
    {
        LogPath = dir[name + ".log"];
        _child = ChildProcess.Start(Workloads.Dirtier, [mib.ToString(CultureInfo.InvariantCulture), LogPath, percentPerSecond.ToString(CultureInfo.InvariantCulture)], newSession: true);
        if (!Poll.Until(() => Written() >= 0, 60_000))
            throw new InvalidOperationException($"dirtier {mib} MiB never ticked");
    }

    public void Adopt(int pid) => _adopted.Add(pid);

    /// <summary>Reaps the original once a dump killed it (an in-process dump may have reaped it already).</summary>
    public void Reap()
    {
        try { _child.WaitExit(); }
        catch (SyscallException e) when (e.Errno == Errno.ECHILD)
        {
            if (!Poll.Until(() => !Directory.Exists($"/proc/{Pid}"), 10_000))
                throw new InvalidOperationException($"process {Pid} is still there after its dump");
        }
    }

    public string[] Lines() => Poll.ReadFile(LogPath).Split('\n', StringSplitOptions.RemoveEmptyEntries);

    /// <summary>Page writes so far, from the last tick line; -1 before the first.</summary>
    public long Written()
    {
        var last = Lines().LastOrDefault(l => l.StartsWith("tick ", StringComparison.Ordinal) && l.Contains(" written=", StringComparison.Ordinal));
        return last is null ? -1 : long.Parse(last[(last.IndexOf(" written=", StringComparison.Ordinal) + 9)..], CultureInfo.InvariantCulture);
    }

    /// <summary>Waits until the process made <paramref name="pages"/> more page writes than now.</summary>
    public void WaitForWrites(long pages, int timeoutMs = 60_000)
    {
        long from = Written();
        if (!Poll.Until(() => Written() >= from + pages, timeoutMs))
            throw new TimeoutException($"dirtier {Pid} did not write {pages} pages (at {Written()} from {from})");
    }

    /// <summary>SIGUSR1 to <paramref name="pid"/>; returns the "check ..." line it writes.</summary>
    public string Check(int pid, int timeoutMs = 60_000)
    {
        int before = Lines().Count(l => l.StartsWith("check", StringComparison.Ordinal));
        Errno.Check(LibC.kill(pid, LibC.SIGUSR1), "kill", $"{pid}, SIGUSR1");
        if (!Poll.Until(() => Lines().Count(l => l.StartsWith("check", StringComparison.Ordinal)) > before, timeoutMs))
            throw new TimeoutException($"process {pid} wrote no check line");
        return Lines().Last(l => l.StartsWith("check", StringComparison.Ordinal));
    }

    public void Dispose()
    {
        foreach (var pid in _adopted)
        {
            LibC.kill(pid, LibC.SIGKILL);
            try { ProcessSpawner.Wait(pid, LibC.__WALL | LibC.WNOHANG); } catch (SyscallException) { }
        }
        _child.Dispose();
    }
}

/// <summary>
/// A running memtouch (see tests/workloads/memtouch.c): N MiB per buffer, one buffer per
/// thread, a tick line every 10 ms in its log, SIGUSR1 → "check ok|BAD" after verifying
/// every buffer. Dispose kills exactly the processes it knows of (the original and any
/// restored pid registered with <see cref="Adopt"/>).
/// </summary>
public sealed class Memtouch : IDisposable
{
    private readonly ChildProcess _child;
    private readonly List<int> _adopted = [];

    public string LogPath { get; }
    public int Pid => _child.Pid;
    public IReadOnlyList<(ulong Address, ulong Sum)> Buffers { get; }
    public int Mib { get; }

    public Memtouch(TempDir dir, int mib, int threads = 0, string name = "memtouch")
    {
        Mib = mib;
        LogPath = dir[name + ".log"];
        _child = ChildProcess.Start(Workloads.Memtouch, [mib.ToString(CultureInfo.InvariantCulture), LogPath, threads.ToString(CultureInfo.InvariantCulture)], newSession: true);
        if (!Poll.Until(() => Lines().Any(l => l.StartsWith("ready", StringComparison.Ordinal)), 60_000))
            throw new InvalidOperationException($"memtouch {mib} MiB never became ready");
        var ready = Lines().First(l => l.StartsWith("ready", StringComparison.Ordinal));
        var bufs = ready.Split(' ').First(p => p.StartsWith("bufs=", StringComparison.Ordinal))["bufs=".Length..];
        Buffers = bufs.Split(',').Select(b =>
        {
            var parts = b.Split(':');
            return (ulong.Parse(parts[0], NumberStyles.HexNumber), ulong.Parse(parts[1], NumberStyles.HexNumber));
        }).ToList();
        // Threads exist once the first tick is written.
        Poll.Until(() => Ticks().Count >= 2, 10_000);
    }

    public void Adopt(int pid) => _adopted.Add(pid);

    /// <summary>
    /// Reaps the original process once a dump has killed it, so its pid is free for a restore.
    /// An in-process dump may have reaped it already (it waits for the tree it killed).
    /// </summary>
    public void Reap()
    {
        try { _child.WaitExit(); }
        catch (SyscallException e) when (e.Errno == Errno.ECHILD)
        {
            if (!Poll.Until(() => !Directory.Exists($"/proc/{Pid}"), 10_000))
                throw new InvalidOperationException($"process {Pid} is still there after its dump");
        }
    }

    public string[] Lines() => Poll.ReadFile(LogPath).Split('\n', StringSplitOptions.RemoveEmptyEntries);

    /// <summary>(counter, CLOCK_REALTIME ns) of every tick line so far.</summary>
    public List<(long N, long Ns)> Ticks() => Lines()
        .Where(l => l.StartsWith("tick ", StringComparison.Ordinal) && l.Split(' ').Length >= 3)
        .Select(l => l.Split(' '))
        .Select(p => (long.Parse(p[1], CultureInfo.InvariantCulture), long.Parse(p[2], CultureInfo.InvariantCulture)))
        .ToList();

    /// <summary>Per-thread counters of the last tick line ("t1=N t2=M").</summary>
    public long[] ThreadCounters()
    {
        var last = Lines().Last(l => l.StartsWith("tick ", StringComparison.Ordinal));
        return last.Split(' ').Where(p => p.StartsWith('t') && p.Contains('=')).Select(p => long.Parse(p[(p.IndexOf('=') + 1)..], CultureInfo.InvariantCulture)).ToArray();
    }

    /// <summary>SIGUSR1 to <paramref name="pid"/>; returns the "check ..." line it writes.</summary>
    public string Check(int pid, int timeoutMs = 60_000)
    {
        int before = Lines().Count(l => l.StartsWith("check", StringComparison.Ordinal));
        Errno.Check(LibC.kill(pid, LibC.SIGUSR1), "kill", $"{pid}, SIGUSR1");
        if (!Poll.Until(() => Lines().Count(l => l.StartsWith("check", StringComparison.Ordinal)) > before, timeoutMs))
            throw new TimeoutException($"process {pid} wrote no check line");
        return Lines().Last(l => l.StartsWith("check", StringComparison.Ordinal));
    }

    /// <summary>memtouch's own checksum over a buffer's bytes.</summary>
    public static ulong Checksum(ReadOnlySpan<byte> bytes)
    {
        ulong s = 0;
        var words = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ulong>(bytes);
        foreach (var w in words) s = (s ^ w) * 0x100000001b3UL;
        return s;
    }

    public void Dispose()
    {
        foreach (var pid in _adopted)
        {
            LibC.kill(pid, LibC.SIGKILL);
            // Reap it if it is our child (restored without -d); otherwise its parent does.
            try { ProcessSpawner.Wait(pid, LibC.__WALL | LibC.WNOHANG); } catch (SyscallException) { }
        }
        _child.Dispose();
    }
}
