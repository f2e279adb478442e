using System.Runtime.InteropServices;
using System.Text;

namespace Crisp.Native;

/// <summary>What to start and how.</summary>
public sealed class SpawnOptions
{
    public required string Path { get; init; }
    /// <summary>argv, including argv[0]. Empty means { Path }.</summary>
    public IReadOnlyList<string> Argv { get; init; } = [];
    /// <summary>envp as "NAME=value". Null means an empty environment.</summary>
    public IReadOnlyList<string>? Envp { get; init; }
    public StdioSource? Stdin { get; init; }
    public StdioSource? Stdout { get; init; }
    public StdioSource? Stderr { get; init; }
    /// <summary>Extra fds of ours to pass: (our fd, fd number in the child).</summary>
    public IReadOnlyList<(int Fd, int ChildFd)> ExtraFds { get; init; } = [];
    /// <summary>Our fds to leave open through <see cref="CloseOtherFds"/> under their own numbers, e.g. a
    /// CLOEXEC memfd executed as /proc/self/fd/N (it must survive until exec, which then closes it).</summary>
    public IReadOnlyList<int> KeepOpenFds { get; init; } = [];
    /// <summary>Start the child in a new session (setsid).</summary>
    public bool NewSession { get; init; }
    /// <summary>Close every fd in the child except 0..2 and <see cref="ExtraFds"/> (default true).</summary>
    public bool CloseOtherFds { get; init; } = true;
    /// <summary>Reset every signal to its default action and unblock all signals (default true;
    /// .NET blocks or handles some signals that a child would otherwise inherit).</summary>
    public bool ResetSignals { get; init; } = true;
}
