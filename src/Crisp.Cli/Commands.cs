using System.CommandLine;
using Crisp.Checkpoint.Dump;

namespace Crisp.Cli;

/// <summary>The checkpoint/restore commands; each is wired here as its mechanism lands.</summary>
public static class Commands
{
    public static IEnumerable<Command> Create() => [DumpCmd()];

    private static Command DumpCmd()
    {
        var common = new CommonOptions();
        var tree = new Option<int>("--tree", "-t") { Description = "PID of the root of the process tree to dump", Required = true };
        var leave = new Option<bool>("--leave-running", "-R") { Description = "leave the tree running after the dump" };
        var cmd = new Command("dump", "Checkpoint a process tree into image files");
        cmd.Options.Add(tree);
        cmd.Options.Add(leave);
        common.AddTo(cmd);
        cmd.SetAction(r => CrispCommand.Guard("dump", () =>
        {
            common.ConfigureLog(r);
            var result = Dumper.Dump(new DumpOptions
            {
                Pid = r.GetValue(tree),
                ImagesDir = common.Images(r),
                LeaveRunning = r.GetValue(leave),
            });
            Crisp.Native.Log.I($"dumped {result.Processes} process(es), {result.Threads} thread(s), {result.PagesWritten} pages in {result.Total.TotalMilliseconds:F1} ms");
            return CrispCommand.ExitOk;
        }));
        return cmd;
    }
}
