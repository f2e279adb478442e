using System.CommandLine;
using Crisp.Cli.Remote;

namespace Crisp.Cli;

/// <summary>Commands that move pages across the network: page-server, migrate, agent.</summary>
public static class RemoteCommands
{
    public static IEnumerable<Command> Create() => [PageServerCommand.Create(), MigrateCommand.Create(), AgentCommand.Create()];
}
