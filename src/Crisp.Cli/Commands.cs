using System.CommandLine;

namespace Crisp.Cli;

/// <summary>The checkpoint/restore commands; each is wired here as its mechanism lands.</summary>
public static class Commands
{
    public static IEnumerable<Command> Create() => [];
}
