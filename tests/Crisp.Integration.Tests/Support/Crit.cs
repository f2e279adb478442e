using System.Text.Json.Nodes;
using Crisp.Native;
using Crisp.Native.Tests.Support;

namespace Crisp.Integration.Tests.Support;

/// <summary>CRIU's own image tool, the judge of our format. Missing crit is a failure, not a skip.</summary>
public static class Crit
{
    public const string Path = "/usr/bin/crit";

    public static JsonNode Decode(TempDir dir, string image)
    {
        if (!File.Exists(Path))
            throw new InvalidOperationException("crit is not installed: apt-get install -y criu (.ci/run does this)");
        string outFile = dir[$"crit-{Guid.NewGuid():N}.json"], errFile = outFile + ".err";
        int pid = ProcessSpawner.Spawn(new SpawnOptions
        {
            Path = Path,
            Argv = [Path, "decode", "-i", image],
            Envp = ["PATH=/usr/bin:/bin"],
            Stdin = StdioSource.DevNull(false),
            Stdout = StdioSource.FromFile(outFile, LibC.O_WRONLY | LibC.O_CREAT | LibC.O_TRUNC),
            Stderr = StdioSource.FromFile(errFile, LibC.O_WRONLY | LibC.O_CREAT | LibC.O_TRUNC),
        });
        int status = ProcessSpawner.Wait(pid);
        if (!LibC.WIFEXITED(status) || LibC.WEXITSTATUS(status) != 0)
            throw new InvalidOperationException($"crit decode {image} failed: {File.ReadAllText(errFile)}");
        return JsonNode.Parse(File.ReadAllText(outFile)) ?? throw new InvalidOperationException("crit printed nothing");
    }

    /// <summary>Decodes every image in <paramref name="imagesDir"/> (raw pages-N.img have no decoder).</summary>
    public static Dictionary<string, JsonNode> DecodeAll(TempDir dir, string imagesDir) =>
        Directory.GetFiles(imagesDir, "*.img")
            .Where(f => !System.IO.Path.GetFileName(f).StartsWith("pages-", StringComparison.Ordinal))
            .ToDictionary(f => System.IO.Path.GetFileName(f), f => Decode(dir, f));
}
