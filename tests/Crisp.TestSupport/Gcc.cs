using Crisp.Native;

namespace Crisp.TestSupport;

/// <summary>
/// Compiles C test programs with gcc (spawned with posix_spawn, waited by pid). Programs from files
/// are compiled once per test run into one directory removed when the test host exits.
/// </summary>
public static class Gcc
{
    private static readonly Lazy<TempDir> RunDir = new(() =>
    {
        var dir = new TempDir("crisp-bin-");
        AppDomain.CurrentDomain.ProcessExit += (_, _) => dir.Dispose();
        return dir;
    });
    private static readonly Dictionary<string, string> Built = [];

    /// <summary>Compiles <paramref name="source"/> (C text) into DIR/NAME.</summary>
    public static string Compile(TempDir dir, string name, string source, params string[] flags)
    {
        var src = dir[name + ".c"];
        File.WriteAllText(src, source);
        return CompileFile(src, dir[name], flags);
    }

    /// <summary>Compiles the C file <paramref name="source"/> into <paramref name="output"/>; -O1 unless a flag says otherwise.</summary>
    public static string CompileFile(string source, string output, params string[] flags)
    {
        var log = output + ".gcc.log";
        var argv = new List<string> { "gcc", "-O1", "-o", output, source };
        argv.AddRange(flags);
        int pid = ProcessSpawner.Spawn(new SpawnOptions
        {
            Path = "/usr/bin/gcc",
            Argv = argv,
            Envp = ["PATH=/usr/bin:/bin", "TMPDIR=" + System.IO.Path.GetDirectoryName(output)],
            Stdin = StdioSource.DevNull(false),
            Stdout = StdioSource.FromFile(log, LibC.O_WRONLY | LibC.O_CREAT | LibC.O_TRUNC),
            Stderr = StdioSource.FromFile(log, LibC.O_WRONLY | LibC.O_CREAT | LibC.O_APPEND),
        });
        int status = ProcessSpawner.Wait(pid);
        if (!LibC.WIFEXITED(status) || LibC.WEXITSTATUS(status) != 0)
            throw new InvalidOperationException($"gcc failed for {source}:\n{File.ReadAllText(log)}");
        File.Delete(log);
        return output;
    }

    /// <summary>
    /// tests/workloads/NAME.c (or <paramref name="source"/>), compiled once per test run with
    /// -O2 -pthread and <paramref name="flags"/>; returns the binary.
    /// </summary>
    public static string Workload(string name, string? source = null, params string[] flags)
    {
        source ??= System.IO.Path.Combine(Repo.Workloads, name + ".c");
        string key = source + " " + string.Join(' ', flags);
        lock (Built)
        {
            if (Built.TryGetValue(key, out var exe)) return exe;
            // Its own directory, so the binary keeps its name (its comm) whatever flags made it.
            var dir = Directory.CreateDirectory(RunDir.Value[Built.Count.ToString(System.Globalization.CultureInfo.InvariantCulture)]).FullName;
            exe = System.IO.Path.Combine(dir, name);
            CompileFile(source, exe, ["-O2", "-pthread", .. flags]);
            return Built[key] = exe;
        }
    }

    /// <summary>Compiles and runs a program to completion, returning its stdout.</summary>
    public static string Run(TempDir dir, string name, string source)
    {
        var exe = Compile(dir, name, source);
        var outFile = dir[name + ".out"];
        using var child = ChildProcess.Start(exe, null, outFile);
        int status = child.WaitExit();
        if (!LibC.WIFEXITED(status) || LibC.WEXITSTATUS(status) != 0)
            throw new InvalidOperationException($"{name} failed: status {status}");
        return File.ReadAllText(outFile);
    }
}
