using Crisp.Native;
using Crisp.TestSupport;

namespace Crisp.Integration.Tests.Support;

/// <summary>The result of one `crisp` command run as a separate process, as a user would.</summary>
public sealed record CliResult(int ExitCode, string Stdout, string Stderr)
{
    public override string ToString() => $"exit {ExitCode}\nstdout: {Stdout}\nstderr: {Stderr}";
}

/// <summary>Runs the crisp command line (the crisp.dll built next to the tests) with `dotnet`.</summary>
public static class CrispCli
{
    public static string Dll => Path.Combine(AppContext.BaseDirectory, "crisp.dll");

    public static CliResult Run(TempDir dir, params string[] args) => Run(dir, TimeSpan.FromSeconds(120), args);

    public static CliResult Run(TempDir dir, TimeSpan timeout, params string[] args) => RunUnder(dir, timeout, [], args);

    /// <summary>`PREFIX... dotnet crisp.dll ARGS`, e.g. PREFIX = `ip netns exec NS` to run crisp inside a network namespace.</summary>
    public static CliResult RunUnder(TempDir dir, string[] prefix, params string[] args) => RunUnder(dir, TimeSpan.FromSeconds(120), prefix, args);

    public static CliResult RunUnder(TempDir dir, TimeSpan timeout, string[] prefix, string[] args)
    {
        string tag = Guid.NewGuid().ToString("N")[..8];
        string stdout = dir[$"cli-{tag}.out"], stderr = dir[$"cli-{tag}.err"];
        int pid = Start(stdout, stderr, args, prefix: prefix);
        int status = WaitWithTimeout(pid, timeout, string.Join(' ', args));
        int code = LibC.WIFEXITED(status) ? LibC.WEXITSTATUS(status) : 128 + LibC.WTERMSIG(status);
        return new CliResult(code, File.ReadAllText(stdout), File.ReadAllText(stderr));
    }

    /// <summary>Starts crisp in the background (for daemons); the caller waits or kills the pid.</summary>
    public static int Start(string stdout, string stderr, string[] args, IReadOnlyList<(int Fd, int ChildFd)>? extraFds = null,
        string[]? prefix = null)
    {
        var argv = new List<string>(prefix ?? []) { prefix is { Length: > 0 } ? "/usr/bin/dotnet" : "dotnet", Dll };
        argv.AddRange(args);
        return ProcessSpawner.Spawn(new SpawnOptions
        {
            Path = prefix is { Length: > 0 } ? prefix[0] : "/usr/bin/dotnet",
            Argv = argv,
            Envp = ["PATH=/usr/bin:/bin:/usr/sbin:/sbin", "HOME=/root", "DOTNET_CLI_TELEMETRY_OPTOUT=1", "DOTNET_NOLOGO=1"],
            Stdin = StdioSource.DevNull(false),
            Stdout = StdioSource.FromFile(stdout, LibC.O_WRONLY | LibC.O_CREAT | LibC.O_TRUNC),
            Stderr = StdioSource.FromFile(stderr, LibC.O_WRONLY | LibC.O_CREAT | LibC.O_TRUNC),
            ExtraFds = extraFds ?? [],
        });
    }

    public static int WaitWithTimeout(int pid, TimeSpan timeout, string what)
    {
        var sw = System.Diagnostics.Stopwatch.StartNew();
        while (true)
        {
            int status = ProcessSpawner.Wait(pid, LibC.WNOHANG);
            if (status >= 0) return status;
            if (sw.Elapsed > timeout)
            {
                LibC.kill(pid, LibC.SIGKILL);
                ProcessSpawner.Wait(pid);
                throw new TimeoutException($"crisp {what} did not finish within {timeout.TotalSeconds} s");
            }
            Thread.Sleep(5);
        }
    }
}
