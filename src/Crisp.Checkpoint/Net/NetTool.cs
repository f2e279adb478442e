using Crisp.Native;

namespace Crisp.Checkpoint.Net;

/// <summary>
/// Runs ip, nft and the iptables tools inside a network namespace, as CRIU does for a namespace
/// the tree owns: the tool is spawned from a thread that joined the namespace (NamespaceThread),
/// so it acts on that namespace and nothing of crisp moves. Its stdout is kept as bytes (ip addr
/// save writes netlink messages), its stderr as text for the error. The network lock runs its
/// nft and iptables the same way (in crisp's own namespace when it is given no namespace fd).
/// </summary>
internal static class NetTool
{
    public const int CLONE_NEWNET = 0x40000000;

    public sealed record Result(int Status, byte[] Stdout, string Stderr)
    {
        /// <summary>What it printed, stdout then stderr, as text (for parsing a listing or naming an error).</summary>
        public string Output => System.Text.Encoding.UTF8.GetString(Stdout) + Stderr;
    }

    /// <summary>The tool's full path, or null when it is not installed.</summary>
    public static string? Find(string name)
    {
        foreach (var dir in new[] { "/usr/sbin", "/sbin", "/usr/bin", "/bin" })
            if (File.Exists(Path.Combine(dir, name))) return Path.Combine(dir, name);
        return null;
    }

    /// <summary>Runs <paramref name="tool"/> in the namespace of <paramref name="netnsFd"/> (an open /proc/PID/ns/net), or here if it is negative.</summary>
    public static Result Run(int netnsFd, string tool, string[] args, byte[]? stdin = null) =>
        netnsFd >= 0 ? NamespaceThread.Run($"/proc/self/fd/{netnsFd}", CLONE_NEWNET, () => RunHere(tool, args, stdin))
                     : RunHere(tool, args, stdin);

    /// <summary>Runs it and throws, naming <paramref name="what"/>, unless it exits 0.</summary>
    public static byte[] Check(int netnsFd, string tool, string[] args, string what, byte[]? stdin = null)
    {
        string path = Find(tool) ?? throw new CrispException($"{what}: {tool} is not installed");
        var r = Run(netnsFd, path, args, stdin);
        if (r.Status != 0)
            throw new CrispException($"{what}: {tool} {string.Join(' ', args)} failed (status {r.Status}): {r.Stderr.Trim()}");
        return r.Stdout;
    }

    /// <summary>Runs <paramref name="path"/> in crisp's own network namespace.</summary>
    public static Result RunHere(string path, string[] args, byte[]? stdin = null)
    {
        string tmp = Path.Combine(Path.GetTempPath(), $"crisp-nettool-{Environment.ProcessId}-{Guid.NewGuid():N}");
        string inFile = tmp + ".in", outFile = tmp + ".out", errFile = tmp + ".err";
        File.WriteAllBytes(inFile, stdin ?? []);
        try
        {
            int pid = ProcessSpawner.Spawn(new SpawnOptions
            {
                Path = path, Argv = [path, .. args], Envp = ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
                Stdin = StdioSource.FromFile(inFile, LibC.O_RDONLY),
                Stdout = StdioSource.FromFile(outFile, LibC.O_WRONLY | LibC.O_CREAT | LibC.O_TRUNC),
                Stderr = StdioSource.FromFile(errFile, LibC.O_WRONLY | LibC.O_CREAT | LibC.O_TRUNC),
            });
            int status = ProcessSpawner.Wait(pid);
            return new Result(LibC.WIFEXITED(status) ? LibC.WEXITSTATUS(status) : 128 + (status & 0x7f),
                File.Exists(outFile) ? File.ReadAllBytes(outFile) : [],
                File.Exists(errFile) ? File.ReadAllText(errFile) : "");
        }
        finally
        {
            File.Delete(inFile);
            File.Delete(outFile);
            File.Delete(errFile);
        }
    }
}
