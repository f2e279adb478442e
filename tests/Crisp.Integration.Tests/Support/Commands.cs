namespace Crisp.Integration.Tests.Support;

/// <summary>Short-lived commands a test runs to set the scene (ip, nft, nsenter): their output, or a failure naming them.</summary>
public static class Commands
{
    /// <summary>Runs a command; its stdout, or a failure with what it printed.</summary>
    public static string Sh(params string[] argv)
    {
        var (code, stdout, stderr) = Exec(argv);
        if (code != 0) throw new InvalidOperationException($"{string.Join(' ', argv)}: exit {code}: {stdout}{stderr}");
        return stdout;
    }

    public static (int Code, string Output) Run(params string[] argv)
    {
        var (code, stdout, stderr) = Exec(argv);
        return (code, stdout + stderr);
    }

    private static (int Code, string Stdout, string Stderr) Exec(string[] argv)
    {
        var psi = new System.Diagnostics.ProcessStartInfo(argv[0], argv[1..]) { RedirectStandardError = true, RedirectStandardOutput = true };
        using var p = System.Diagnostics.Process.Start(psi)!;
        var err = p.StandardError.ReadToEndAsync();
        string stdout = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, stdout, err.Result);
    }
}
