using Crisp.Native;

namespace Crisp.Native.Tests.Support;

/// <summary>Compiles C test programs with gcc into a temp directory (spawned with posix_spawn, waited by pid).</summary>
public static class Gcc
{
    public static string Compile(TempDir dir, string name, string source, params string[] flags)
    {
        var src = dir[name + ".c"];
        var exe = dir[name];
        var log = dir[name + ".log"];
        File.WriteAllText(src, source);
        var argv = new List<string> { "gcc", "-O1", "-o", exe, src };
        argv.AddRange(flags);
        int pid = ProcessSpawner.Spawn(new SpawnOptions
        {
            Path = "/usr/bin/gcc",
            Argv = argv,
            Envp = ["PATH=/usr/bin:/bin", "TMPDIR=" + dir.Path],
            Stdin = StdioSource.DevNull(false),
            Stdout = StdioSource.FromFile(log, LibC.O_WRONLY | LibC.O_CREAT | LibC.O_TRUNC),
            Stderr = StdioSource.FromFile(log, LibC.O_WRONLY | LibC.O_CREAT | LibC.O_APPEND),
        });
        int status = ProcessSpawner.Wait(pid);
        if (!LibC.WIFEXITED(status) || LibC.WEXITSTATUS(status) != 0)
            throw new InvalidOperationException($"gcc failed for {name}:\n{File.ReadAllText(log)}");
        return exe;
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
