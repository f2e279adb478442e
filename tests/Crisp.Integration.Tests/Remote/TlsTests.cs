using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using Crisp.Images;
using Crisp.Integration.Tests.Support;
using Crisp.Native;
using Crisp.TestSupport;
using Crisp.PageServer.Client;
using Crisp.PageServer.Protocol;
using Crisp.PageServer.Transport;
using Xunit;
using static Crisp.Integration.Tests.Remote.RemoteUtil;

namespace Crisp.Integration.Tests.Remote;

/// <summary>
/// --tls on the page server (both modes), dump --page-server, lazy-pages --page-server, and
/// migrate/agent (certificates or --auth-token-file), with certificates the test makes. Clients
/// that fail authentication are refused before the server reads or serves anything, and the
/// server goes on serving the good ones.
/// </summary>
public class TlsTests
{
    private static readonly string[] Loopback = ["--address", "127.0.0.1", "--port", "0"];

    private static string Log(BackgroundCrisp p, string logFile) => p.Output + "\nlog: " + Poll.ReadFile(logFile);

    [Fact]
    public void Tls_lazy_page_server_refuses_plaintext_no_certificate_and_foreign_ca_then_serves_a_lazy_restore()
    {
        using var dir = new TempDir();
        var pki = new TestPki(dir);
        var server = pki.Leaf("server");
        var client = pki.Leaf("client");
        var rogue = pki.Leaf("rogue", otherCa: true);
        using var w = new Memtouch(dir, mib: 32);
        var d = CrispCli.Run(dir, "dump", "-t", S(w.Pid), "-D", dir["img"]);
        Assert.True(d.ExitCode == 0, d.ToString());
        string psLog = dir["ps.log"];
        using var ps = new BackgroundCrisp(dir, "ps", ["page-server", "--lazy-pages", "-D", dir["img"], .. Loopback, .. pki.Args(server), "-v4", "-o", psLog]);
        int port = ps.Port();
        var ep = new IPEndPoint(IPAddress.Loopback, port);
        var (addr, _) = w.Buffers[0];

        // 1. Plaintext: a GET straight away. The server takes it for a ClientHello and closes.
        using (var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { ReceiveTimeout = 15_000 })
        {
            s.Connect(ep);
            var get = new byte[PageServerIov.Size];
            PageServerIov.Get(w.Pid, addr, 1).WriteTo(get);
            s.Send(get);
            var got = ReadToEnd(s);
            Assert.True(got.Length < PageServerIov.Size + 4096, $"a plaintext client got {got.Length} bytes");
            Assert.False(got.Length >= 4 && BitConverter.ToUInt32(got, 0) == (uint)PageServerOp.AddF, "a plaintext client got an ADD_F answer");
        }
        // 2. TLS without a client certificate (and trusting anything): no page comes back.
        using (var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { ReceiveTimeout = 15_000, SendTimeout = 15_000 })
        {
            s.Connect(ep);
            using var ssl = new SslStream(new NetworkStream(s), false, (_, _, _, _) => true);
            var pages = 0;
            try
            {
                ssl.AuthenticateAsClient("127.0.0.1");
                var get = new byte[PageServerIov.Size];
                PageServerIov.Get(w.Pid, addr, 1).WriteTo(get);
                ssl.Write(get);
                var buf = new byte[PageServerIov.Size + 4096];
                int n;
                while ((n = ssl.Read(buf, pages, buf.Length - pages)) > 0) pages += n;
            }
            catch (Exception e) when (e is IOException or System.Security.Authentication.AuthenticationException) { }
            Assert.Equal(0, pages);
        }
        // 3. A certificate from another CA (the client itself trusts the server's CA).
        var rogueTransport = new PageServerTransport { Tls = new TlsSettings { CaCert = pki.CaCert, Cert = rogue.Cert, Key = rogue.Key }.Load() };
        using (var source = new RemotePageSource(ep, new RemotePageSourceOptions { Transport = rogueTransport }))
        {
            var ex = Assert.Throws<PageSourceException>(() =>
            {
                using var ch = source.OpenChannel();
                ch.Read(w.Pid, addr, new byte[4096]);
            });
            Assert.Contains("page server", ex.Message);
        }
        Assert.True(Poll.Until(() => Count(Poll.ReadFile(psLog), "refused before any page was read or served") >= 3, 20_000), Log(ps, psLog));
        string log = Poll.ReadFile(psLog);
        Assert.Contains("sent no certificate", log);
        Assert.Contains("is not trusted", log);
        Assert.DoesNotContain(" GETs", log); // no session got as far as serving

        // The good client: a lazy restore whose every page comes over TLS.
        string work = dir["work"];
        Directory.CreateDirectory(work);
        using var lazy = new BackgroundCrisp(dir, "lazy", ["lazy-pages", "-D", dir["img"], "-W", work, "--page-server", "--address", "127.0.0.1", "--port", S(port), .. pki.Args(client)]);
        Assert.True(Poll.Until(() => File.Exists(Path.Combine(work, "lazy-pages.socket")) || lazy.Exited, 30_000), lazy.Output);
        using var restore = new BackgroundCrisp(dir, "restore", BackgroundCrisp.InNewPidNs, ["restore", "-D", dir["img"], "-W", work, "--lazy-pages", "--pidfile", dir["restored.pid"]]);
        int pid = WaitOuterPid(w.Pid, restore, dir["restored.pid"]);
        w.Adopt(pid);
        Assert.StartsWith("check ok", w.Check(pid));
        Assert.True(lazy.WaitExit(TimeSpan.FromSeconds(60)) == 0, lazy.Output);
        Assert.True(Poll.Until(() => Poll.ReadFile(psLog).Contains(" GETs"), 10_000), Log(ps, psLog));
        Assert.False(ps.Exited, "the page server stopped");
        restore.Terminate(LibC.SIGKILL);
        restore.WaitExit(TimeSpan.FromSeconds(10));
    }

    [Fact]
    public void Tls_dump_into_a_tls_page_server_stores_the_pages_and_a_revoked_client_stores_nothing()
    {
        using var dir = new TempDir();
        var pki = new TestPki(dir);
        var server = pki.Leaf("server");
        var client = pki.Leaf("client");
        var revoked = pki.Leaf("revoked");
        string crl = pki.Crl(revoked.Certificate);
        using var w = new Memtouch(dir, mib: 16);
        string psLog = dir["ps.log"];
        using var ps = new BackgroundCrisp(dir, "ps", ["page-server", "-D", dir["server"], .. Loopback, .. pki.Args(server), "--tls-cacrl", crl, "-v4", "-o", psLog]);
        int port = ps.Port();

        var bad = CrispCli.Run(dir, ["dump", "-t", S(w.Pid), "-D", dir["bad"], "-R", "--page-server", "--address", "127.0.0.1", "--port", S(port), .. pki.Args(revoked)]);
        Assert.True(bad.ExitCode == 1, bad.ToString());
        Assert.True(Poll.Until(() => Poll.ReadFile(psLog).Contains("is revoked"), 10_000), Log(ps, psLog));
        Assert.Empty(Directory.GetFiles(dir["server"], "page*"));

        var good = CrispCli.Run(dir, ["dump", "-t", S(w.Pid), "-D", dir["remote"], "-R", "--page-server", "--address", "127.0.0.1", "--port", S(port), .. pki.Args(client)]);
        Assert.True(good.ExitCode == 0, good + Log(ps, psLog));
        Assert.True(Poll.Until(() => File.Exists(Path.Combine(dir["server"], $"pagemap-{w.Pid}.img"))), Log(ps, psLog));
        using var pagemap = new ImageDir(dir["server"]).OpenPagemap(w.Pid);
        var (addr, sum) = w.Buffers[0];
        var buf = new byte[w.Mib << 20];
        pagemap.Read(addr, buf);
        Assert.Equal(sum, Memtouch.Checksum(buf));
        Assert.StartsWith("check ok", w.Check(w.Pid));
    }

    private const string Loop = "import sys, time\ni = 0\nwhile True:\n    print(i, flush=True)\n    i += 1\n    time.sleep(0.01)\n";

    private static ChildProcess StartLoop(TempDir dir)
    {
        File.WriteAllText(dir["loop.py"], Loop);
        var child = ChildProcess.Start("/usr/bin/python3", [dir["loop.py"]], dir["loop.out"], newSession: true);
        Assert.True(Poll.Until(() => Lines(dir) > 5, 10_000), "the python loop does not print");
        return child;
    }

    private static int Lines(TempDir dir) => Poll.ReadFile(dir["loop.out"]).Split('\n', StringSplitOptions.RemoveEmptyEntries).Length;

    private static void AssertRuns(TempDir dir, string what)
    {
        int before = Lines(dir);
        Assert.True(Poll.Until(() => Lines(dir) > before + 20, 20_000), what);
    }

    [Fact]
    public void Tls_agent_refuses_a_plaintext_and_a_foreign_ca_migrate_then_takes_a_certified_one()
    {
        using var dir = new TempDir();
        var pki = new TestPki(dir);
        var agentLeaf = pki.Leaf("agent");
        var source = pki.Leaf("source");
        var rogue = pki.Leaf("rogue", otherCa: true);
        using var py = StartLoop(dir);
        using var agent = new BackgroundCrisp(dir, "agent", BackgroundCrisp.InNewPidNs, ["agent", "--listen", "127.0.0.1:0", .. pki.Args(agentLeaf)]);
        int port = agent.Port();
        string to = $"127.0.0.1:{port}";

        var plain = CrispCli.Run(dir, "migrate", S(py.Pid), "--to", to, "--timeout", "10");
        Assert.True(plain.ExitCode == 1, plain + agent.Output);
        var foreign = CrispCli.Run(dir, ["migrate", S(py.Pid), "--to", to, "--timeout", "10", .. pki.Args(rogue)]);
        Assert.True(foreign.ExitCode == 1, foreign + agent.Output);
        Assert.True(Poll.Until(() => Count(agent.Output, "refused before any image was read") >= 2, 20_000), agent.Output);
        Assert.DoesNotContain("agent: migration from", agent.Output); // no image directory was made, no byte stored
        AssertRuns(dir, "the source does not run after the refused migrations");

        var good = CrispCli.Run(dir, ["migrate", S(py.Pid), "--to", to, .. pki.Args(source)]);
        Assert.True(good.ExitCode == 0, good + agent.Output);
        Assert.True(Poll.Until(() => Gone(py.Pid)), "the source is still alive");
        AssertRuns(dir, "the output did not continue after the TLS migration");
    }

    [Fact]
    public void Token_agent_refuses_a_wrong_token_and_takes_the_right_one_and_needs_auth_off_loopback()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir["token"], "correct horse battery staple\n");
        File.WriteAllText(dir["wrong"], "incorrect horse battery staple\n");

        var open = CrispCli.Run(dir, "agent", "--listen", "0.0.0.0:0");
        Assert.True(open.ExitCode == 2, open.ToString());
        Assert.Contains("--auth-token-file", open.Stderr);
        using (var withToken = new BackgroundCrisp(dir, "agent0", "agent", "--listen", "0.0.0.0:0", "--auth-token-file", dir["token"]))
        {
            withToken.Port();
            withToken.Terminate();
            Assert.Equal(0, withToken.WaitExit(TimeSpan.FromSeconds(20)));
        }

        using var py = StartLoop(dir);
        using var agent = new BackgroundCrisp(dir, "agent", BackgroundCrisp.InNewPidNs, ["agent", "--listen", "127.0.0.1:0", "--auth-token-file", dir["token"]]);
        int port = agent.Port();
        var wrong = CrispCli.Run(dir, "migrate", S(py.Pid), "--to", $"127.0.0.1:{port}", "--timeout", "10", "--auth-token-file", dir["wrong"]);
        Assert.True(wrong.ExitCode == 1, wrong + agent.Output);
        Assert.True(Poll.Until(() => agent.Output.Contains("wrong access key"), 20_000), agent.Output);
        Assert.DoesNotContain("agent: migration from", agent.Output);
        AssertRuns(dir, "the source does not run after the refused migration");

        var good = CrispCli.Run(dir, "migrate", S(py.Pid), "--to", $"127.0.0.1:{port}", "--auth-token-file", dir["token"]);
        Assert.True(good.ExitCode == 0, good + agent.Output);
        Assert.True(Poll.Until(() => Gone(py.Pid)), "the source is still alive");
        AssertRuns(dir, "the output did not continue after the migration");
    }

    private static int Count(string text, string what)
    {
        int n = 0;
        for (int i = text.IndexOf(what, StringComparison.Ordinal); i >= 0; i = text.IndexOf(what, i + what.Length, StringComparison.Ordinal)) n++;
        return n;
    }

    private static byte[] ReadToEnd(Socket s)
    {
        var all = new List<byte>();
        var buf = new byte[65536];
        try
        {
            int n;
            while ((n = s.Receive(buf)) > 0) all.AddRange(buf.AsSpan(0, n).ToArray());
        }
        catch (SocketException) { }
        return all.ToArray();
    }
}
