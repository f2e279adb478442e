using System.Runtime.InteropServices;
using System.Text;

namespace Crisp.Native;

/// <summary>Where one standard stream of a spawned process comes from.</summary>
public readonly record struct StdioSource
{
    /// <summary>An fd of ours duplicated onto the child's stream (-1: none).</summary>
    public int Fd { get; init; }
    /// <summary>A file opened in the child (with <see cref="Flags"/>), used when <see cref="Fd"/> is -1.</summary>
    public string? Path { get; init; }
    public int Flags { get; init; }

    public static StdioSource FromFd(int fd) => new() { Fd = fd };
    public static StdioSource FromFile(string path, int flags) => new() { Fd = -1, Path = path, Flags = flags };
    public static StdioSource DevNull(bool write) =>
        FromFile("/dev/null", write ? LibC.O_WRONLY : LibC.O_RDONLY);
}
