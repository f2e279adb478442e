using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Crisp.Images;
using Crisp.PageServer.Client;
using Xunit;
using Xunit.Abstractions;

namespace Crisp.PageServer.Tests;

/// <summary>
/// crisp's client against CRIU's own page server (Debian criu 3.17 at /usr/sbin/criu): proof that
/// the wire format is CRIU's, not just self-consistent.
/// </summary>
public sealed class CriuInteropTests(ITestOutputHelper output) : IDisposable
{
    private const string Criu = "/usr/sbin/criu";
    private readonly string _dir = Directory.CreateTempSubdirectory("crisp-ps-criu-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    // Debian's criu 3.17 cannot start on this kernel (Linux 6.18): its kerndat probe fails with
    // "vdso: Unexpected rt vDSO area bounds" (the [vvar]/[vvar_vclock] layout is newer than it
    // knows), before page-server mode is reached. Kept so it runs where a working criu exists.
    [Fact(Skip = "criu 3.17 fails kerndat on Linux 6.18 (vdso bounds); see comment")]
    public void Criu_page_server_stores_what_our_dump_client_sends()
    {
        byte[] run = new byte[40 * 4096];
        PatternPageSource.Fill(31337, 0x7f00_0000_0000, run);
        byte[] one = new byte[4096];
        PatternPageSource.Fill(31337, 0x40_0000, one);

        int port = FreePort();
        using var criu = StartCriu("page-server", "-D", _dir, "--address", "127.0.0.1", "--port", port.ToString(),
            "-o", Path.Combine(_dir, "ps.log"), "-v4");
        try
        {
            using var client = ConnectWithRetry(() => PageServerClient.Connect(new IPEndPoint(IPAddress.Loopback, port)));
            Assert.False(client.OpenPagemap(31337));
            client.SendPages(0x40_0000, one);
            client.SendEntry(0x50_0000, 4, PagemapFlags.Lazy);
            client.SendPages(0x7f00_0000_0000, run, PagemapFlags.Present | PagemapFlags.Lazy);
            client.Close();
            Assert.True(criu.WaitForExit(10_000), "criu page-server did not finish after CLOSE");
        }
        finally
        {
            Finish(criu);
        }
        Assert.Equal(0, criu.ExitCode);

        using var r = new ImageDir(_dir).OpenPagemap(31337);
        output.WriteLine($"criu wrote {Path.GetFileName(r.PagesPath)}: " + string.Join(", ", r.Runs.Select(x => $"0x{x.Vaddr:x}+{x.NrPages} {x.Flags}")));
        Assert.Equal(
            [(0x40_0000UL, 1UL, PagemapFlags.Present), (0x50_0000UL, 4UL, PagemapFlags.Lazy),
             (0x7f00_0000_0000UL, 40UL, PagemapFlags.Present | PagemapFlags.Lazy)],
            r.Runs.Select(x => (x.Vaddr, x.NrPages, x.Flags)));
        var back = new byte[run.Length];
        r.Read(0x7f00_0000_0000, back);
        Assert.Equal(run, back);
        r.Read(0x40_0000, back.AsSpan(0, 4096));
        Assert.Equal(one, back.AsSpan(0, 4096).ToArray());
    }

    private Process StartCriu(params string[] args)
    {
        Assert.True(File.Exists(Criu), "criu is required for the interop tests");
        var psi = new ProcessStartInfo(Criu, args) { RedirectStandardError = true, RedirectStandardOutput = true };
        return Process.Start(psi)!;
    }

    private void Finish(Process criu)
    {
        if (!criu.HasExited) criu.Kill();
        criu.WaitForExit();
        string log = Path.Combine(_dir, "ps.log");
        if (File.Exists(log))
            foreach (var line in File.ReadLines(log).TakeLast(15)) output.WriteLine(line);
        output.WriteLine(criu.StandardError.ReadToEnd());
    }

    private static T ConnectWithRetry<T>(Func<T> connect)
    {
        var deadline = Environment.TickCount64 + 10_000;
        while (true)
        {
            try { return connect(); }
            catch (Exception e) when (e is SocketException or Crisp.Images.PageSourceException && Environment.TickCount64 < deadline)
            {
                Thread.Sleep(50);
            }
        }
    }

    private static int FreePort()
    {
        using var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        s.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return ((IPEndPoint)s.LocalEndPoint!).Port;
    }
}
