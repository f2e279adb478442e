using System.CommandLine;
using Crisp.Native;

namespace Crisp.Cli;

/// <summary>
/// The `crisp` command line. Option names follow CRIU's so scripts written for
/// `criu dump/restore/lazy-pages/page-server` run unchanged.
/// Exit codes: 0 success, 1 the operation failed, 2 bad usage, 3 bad or corrupt images.
/// </summary>
public static class CrispCommand
{
    public const int ExitOk = 0, ExitFailed = 1, ExitUsage = 2, ExitBadImages = 3;

    public static int Run(string[] args)
    {
        var root = new RootCommand("crisp: checkpoint/restore for Linux processes, with lazy restore and post-copy live migration");
        root.Subcommands.Add(CheckCommand.Create());
        root.Subcommands.Add(DemoCommand.Create());
        foreach (var c in Commands.Create())
            root.Subcommands.Add(c);
        var parse = root.Parse(NormalizeVerbosity(args));
        if (parse.Errors.Count > 0)
        {
            // System.CommandLine would exit 1 and print its help page; crisp says what is wrong and exits 2.
            foreach (var error in parse.Errors)
                Console.Error.WriteLine($"crisp: {error.Message}");
            Console.Error.WriteLine("crisp: see 'crisp --help' or 'crisp COMMAND --help'");
            return ExitUsage;
        }
        return parse.Invoke();
    }

    /// <summary>CRIU writes verbosity as -v4 or -vvvv; System.CommandLine wants -v 4.</summary>
    internal static string[] NormalizeVerbosity(string[] args)
    {
        var result = new List<string>(args.Length + 2);
        foreach (var a in args)
        {
            if (a.Length > 2 && a.StartsWith("-v", StringComparison.Ordinal) && a[2..].All(char.IsAsciiDigit))
            { result.Add("-v"); result.Add(a[2..]); }
            else if (a.Length > 2 && a.StartsWith("-v", StringComparison.Ordinal) && a[1..].All(c => c == 'v'))
            { result.Add("-v"); result.Add((a.Length - 1).ToString()); }
            else if (a.StartsWith("--verbosity=", StringComparison.Ordinal))
            { result.Add("-v"); result.Add(a["--verbosity=".Length..]); }
            else result.Add(a);
        }
        return result.ToArray();
    }

    /// <summary>
    /// Runs a command body with crisp's error policy: every failure becomes one clear line on
    /// stderr (and in the log) and an exit code, never a stack trace for an expected failure.
    /// </summary>
    public static int Guard(string what, Func<int> body)
    {
        try
        {
            return body();
        }
        catch (UsageException e)
        {
            Log.E($"{what}: {e.Message}");
            return ExitUsage;
        }
        catch (Crisp.Images.ImageException e)
        {
            Log.E($"{what}: bad image: {e.Message}");
            return ExitBadImages;
        }
        catch (Exception e) when (BadImage(e))
        {
            // A step that failed on an image (restore wraps it to name the step): still exit 3.
            Log.E($"{what}: bad image: {e.Message}");
            return ExitBadImages;
        }
        catch (CrispException e)
        {
            Log.E($"{what}: {e.Message}");
            return ExitFailed;
        }
        catch (SyscallException e)
        {
            Log.E($"{what}: {e.Message}");
            return ExitFailed;
        }
        catch (IOException e)
        {
            Log.E($"{what}: {e.Message}");
            return ExitFailed;
        }
        catch (UnauthorizedAccessException e)
        {
            Log.E($"{what}: {e.Message}");
            return ExitFailed;
        }
        catch (Exception e)
        {
            Log.E($"{what}: internal error: {e}");
            return ExitFailed;
        }
        finally
        {
            Log.Close();
        }
    }

    private static bool BadImage(Exception e)
    {
        for (var inner = e.InnerException; inner is not null; inner = inner.InnerException)
            if (inner is Crisp.Images.ImageException) return true;
        return false;
    }
}
