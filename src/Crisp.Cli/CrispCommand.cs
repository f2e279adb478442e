using System.CommandLine;

namespace Crisp.Cli;

public static class CrispCommand
{
    public static int Run(string[] args)
    {
        var root = new RootCommand("crisp: checkpoint/restore for Linux processes, with lazy restore and post-copy migration");
        return root.Parse(args).Invoke();
    }
}
