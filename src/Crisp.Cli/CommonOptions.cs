using System.CommandLine;
using Crisp.Native;

namespace Crisp.Cli;

/// <summary>Options every checkpoint/restore command shares, with CRIU's names.</summary>
public sealed class CommonOptions
{
    public readonly Option<string> ImagesDir = new("--images-dir", "-D") { Description = "directory for the image files", DefaultValueFactory = _ => "." };
    public readonly Option<string?> WorkDir = new("--work-dir", "-W") { Description = "directory for logs and sockets (default: the images directory)" };
    public readonly Option<string?> LogFile = new("--log-file", "-o") { Description = "log file, relative to the work directory unless absolute" };
    public readonly Option<int> Verbosity = new("--verbosity", "-v") { Description = "log level 0-4 (CRIU style: -v4, -vvvv)", DefaultValueFactory = _ => 2, Arity = ArgumentArity.ZeroOrOne };

    public void AddTo(Command cmd)
    {
        cmd.Options.Add(ImagesDir);
        cmd.Options.Add(WorkDir);
        cmd.Options.Add(LogFile);
        cmd.Options.Add(Verbosity);
    }

    public string Images(ParseResult r) => Path.GetFullPath(r.GetValue(ImagesDir) ?? ".");
    public string Work(ParseResult r) => Path.GetFullPath(r.GetValue(WorkDir) ?? Images(r));

    /// <summary>Sets up the log as CRIU does: -o FILE under the work dir, level from -v.</summary>
    public void ConfigureLog(ParseResult r)
    {
        Log.Level = r.GetValue(Verbosity);
        var file = r.GetValue(LogFile);
        if (file is null) return;
        var work = Work(r);
        Directory.CreateDirectory(work);
        Log.OpenFile(Path.IsPathRooted(file) ? file : Path.Combine(work, file));
    }
}
