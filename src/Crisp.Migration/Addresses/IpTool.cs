using Crisp.Native;

namespace Crisp.Migration.Addresses;

/// <summary>iproute2's <c>ip</c>, run with its output collected (addresses are few and change rarely: no netlink code of our own).</summary>
internal static class IpTool
{
    private static string Path()
    {
        foreach (var dir in new[] { "/usr/sbin", "/sbin", "/usr/bin", "/bin" })
            if (File.Exists(System.IO.Path.Combine(dir, "ip"))) return System.IO.Path.Combine(dir, "ip");
        throw new CrispException("moving an address needs ip (iproute2), which is not installed");
    }

    public static (int Status, string Output) Run(params string[] args)
    {
        string ip = Path();
        string tmp = System.IO.Path.Combine(System.IO.Path.GetTempPath(), $"crisp-ip-{Environment.ProcessId}-{Guid.NewGuid():N}.out");
        try
        {
            int pid = ProcessSpawner.Spawn(new SpawnOptions
            {
                Path = ip, Argv = [ip, .. args], Envp = ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
                Stdin = StdioSource.DevNull(false),
                Stdout = StdioSource.FromFile(tmp, LibC.O_WRONLY | LibC.O_CREAT | LibC.O_APPEND),
                Stderr = StdioSource.FromFile(tmp, LibC.O_WRONLY | LibC.O_CREAT | LibC.O_APPEND),
            });
            int status = ProcessSpawner.Wait(pid);
            string output = File.Exists(tmp) ? File.ReadAllText(tmp) : "";
            return (LibC.WIFEXITED(status) ? LibC.WEXITSTATUS(status) : 128 + (status & 0x7f), output);
        }
        finally
        {
            File.Delete(tmp);
        }
    }
}
