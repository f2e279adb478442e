using Crisp.Images;
using Crisp.Images.Pages;
using Crisp.Integration.Tests.Support;
using Crisp.TestSupport;
using Crisp.PageServer.Client;
using Xunit;
using static Crisp.Integration.Tests.Remote.RemoteUtil;

namespace Crisp.Integration.Tests.Remote;

/// <summary>`crisp dump --page-server` into `crisp page-server`, and `crisp dump --lazy-pages` served from the frozen process.</summary>
public class PageServerDumpTests
{
    [Fact]
    public void Dump_to_page_server_gives_the_images_of_a_local_dump()
    {
        using var dir = new TempDir();
        using var w = new Memtouch(dir, mib: 8);
        using var server = new BackgroundCrisp(dir, "ps", "page-server", "-D", dir["server"], "--address", "127.0.0.1", "--port", "0");
        int port = server.Port();

        var remote = CrispCli.Run(dir, "dump", "-t", S(w.Pid), "-D", dir["remote"], "-R", "--page-server", "--address", "127.0.0.1", "--port", S(port));
        Assert.True(remote.ExitCode == 0, remote.ToString());
        var local = CrispCli.Run(dir, "dump", "-t", S(w.Pid), "-D", dir["local"], "-R");
        Assert.True(local.ExitCode == 0, local.ToString());

        // CRIU's semantics: pagemap and pages are in the page server's directory, not the dump's.
        Assert.False(File.Exists(Path.Combine(dir["remote"], $"pagemap-{w.Pid}.img")));
        Assert.True(File.Exists(Path.Combine(dir["remote"], $"mm-{w.Pid}.img")));
        Assert.True(Poll.Until(() => File.Exists(Path.Combine(dir["server"], $"pagemap-{w.Pid}.img"))), server.Output);

        using var fromServer = new ImageDir(dir["server"]).OpenPagemap(w.Pid);
        using var fromLocal = new ImageDir(dir["local"]).OpenPagemap(w.Pid);
        Assert.Equal(fromLocal.Runs.Select(r => (r.Vaddr, r.NrPages, r.Flags)), fromServer.Runs.Select(r => (r.Vaddr, r.NrPages, r.Flags)));
        Assert.Equal(fromLocal.PresentPages, fromServer.PresentPages);
        var (addr, sum) = w.Buffers[0];
        var buf = new byte[w.Mib << 20];
        fromServer.Read(addr, buf);
        Assert.Equal(sum, Memtouch.Checksum(buf));
        // Pages outside the workload's buffer: equal except where the running process wrote between the two dumps.
        int differing = 0;
        var a = new byte[4096];
        var b = new byte[4096];
        foreach (var run in fromLocal.Runs.Where(r => r.IsPresent))
            for (ulong p = run.Vaddr; p < run.End; p += 4096)
            {
                fromLocal.Read(p, a);
                fromServer.Read(p, b);
                if (!a.AsSpan().SequenceEqual(b)) differing++;
            }
        Assert.True(differing <= 8, $"{differing} pages differ between the page-server and the local dump");

        var decoded = Crit.DecodeNode(Path.Combine(dir["server"], $"pagemap-{w.Pid}.img"));
        Assert.NotNull(decoded);

        // The server goes on serving: a second dump works too.
        var again = CrispCli.Run(dir, "dump", "-t", S(w.Pid), "-D", dir["remote2"], "-R", "--page-server", "--address", "127.0.0.1", "--port", S(port));
        Assert.True(again.ExitCode == 0, again.ToString());
        Assert.StartsWith("check ok", w.Check(w.Pid));
        server.Terminate();
        Assert.Equal(0, server.WaitExit(TimeSpan.FromSeconds(20)));
    }

    [Fact]
    public void Dump_to_page_server_restores_with_the_servers_pagemap()
    {
        using var dir = new TempDir();
        using var w = new Memtouch(dir, mib: 8);
        using var server = new BackgroundCrisp(dir, "ps", "page-server", "-D", dir["server"], "--address", "127.0.0.1", "--port", "0");
        int port = server.Port();
        var dump = CrispCli.Run(dir, "dump", "-t", S(w.Pid), "-D", dir["img"], "--page-server", "--address", "127.0.0.1", "--port", S(port));
        Assert.True(dump.ExitCode == 0, dump.ToString());
        Assert.True(Poll.Until(() => Gone(w.Pid)), "dump without -R left the process running");
        Crisp.Native.ProcessSpawner.Wait(w.Pid); // the dump killed it; free the pid for the restore
        // Images from both sides in one directory, as a user would copy them.
        CopyImages(dir["server"], dir["img"]);
        var restore = CrispCli.Run(dir, "restore", "-D", dir["img"], "-d");
        Assert.True(restore.ExitCode == 0, restore.ToString());
        w.Adopt(w.Pid);
        Assert.StartsWith("check ok", w.Check(w.Pid));
    }

    [Fact]
    public void Dump_to_an_absent_page_server_fails_and_leaves_the_process_running()
    {
        using var dir = new TempDir();
        using var w = new Memtouch(dir, mib: 2);
        var r = CrispCli.Run(dir, "dump", "-t", S(w.Pid), "-D", dir["img"], "--page-server", "--address", "127.0.0.1", "--port", "1");
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("page server", r.Stderr);
        Assert.StartsWith("check ok", w.Check(w.Pid));
    }

    [Fact]
    public void Lazy_dump_writes_lazy_entries_serves_pages_from_the_frozen_process_and_kills_it_when_all_are_delivered()
    {
        using var dir = new TempDir();
        using var w = new Memtouch(dir, mib: 16);
        using var dump = new BackgroundCrisp(dir, "lazydump", "dump", "-t", S(w.Pid), "-D", dir["img"], "--lazy-pages", "--address", "127.0.0.1", "--port", "0");
        int port = dump.Port("lazy page server listening on");

        var images = new ImageDir(dir["img"]);
        Assert.True(images.Exists(ImageDir.InventoryName));
        using var pagemap = images.OpenPagemap(w.Pid);
        var lazy = pagemap.Runs.Where(r => r.IsLazy).ToList();
        Assert.NotEmpty(lazy);
        Assert.All(lazy, r => Assert.False(r.IsPresent));
        var (addr, sum) = w.Buffers[0];
        Assert.Contains(lazy, r => r.Contains(addr) && r.Contains(addr + ((ulong)w.Mib << 20) - 1));
        // Non-lazy pages (vdso, COW'd pages of private file mappings) are still in the local pages image.
        Assert.Contains(pagemap.Runs, r => r.IsPresent);
        Crit.DecodeNode(images.PathOf(ImageDir.PagemapName(w.Pid)));

        // What the lazy-pages daemon will plan from these images: the workload's buffer is data to fetch.
        var plan = Crisp.LazyPages.LocalImages.Plan(images, w.Pid);
        Assert.Contains(plan.DataRuns, r => r.Vaddr <= addr && addr + ((ulong)w.Mib << 20) <= r.End);

        // The tree stays frozen while serving.
        long ticks = w.Ticks().Last().N;
        Thread.Sleep(200);
        Assert.Equal(ticks, w.Ticks().Last().N);

        using var source = new RemotePageSource(new System.Net.IPEndPoint(System.Net.IPAddress.Loopback, port));
        using (var ch = source.OpenChannel())
        {
            var buf = new byte[w.Mib << 20];
            ch.Read(w.Pid, addr, buf);
            Assert.Equal(sum, Memtouch.Checksum(buf));
            var chunk = new byte[1 << 20];
            foreach (var r in lazy)
                for (ulong p = r.Vaddr; p < r.End;)
                {
                    int n = (int)Math.Min((ulong)chunk.Length, r.End - p);
                    ch.Read(w.Pid, p, chunk.AsSpan(0, n));
                    p += (ulong)n;
                }
        }
        Assert.Equal(0, dump.WaitExit(TimeSpan.FromSeconds(30)));
        Assert.True(Poll.Until(() => Gone(w.Pid)), "source still alive after every lazy page was delivered");
    }

    [Fact]
    public void Lazy_dump_that_nobody_fetches_resumes_the_process_exactly_as_it_was()
    {
        using var dir = new TempDir();
        using var w = new Memtouch(dir, mib: 4);
        var r = CrispCli.Run(dir, "dump", "-t", S(w.Pid), "-D", dir["img"], "--lazy-pages", "--address", "127.0.0.1", "--port", "0", "--lazy-timeout", "1");
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("resumed", r.Stderr);
        Assert.StartsWith("check ok", w.Check(w.Pid));
        long n = w.Ticks().Last().N;
        Assert.True(Poll.Until(() => w.Ticks().Last().N > n + 3), "ticks stopped after the resumed lazy dump");
    }

    [Fact]
    public void Page_server_daemon_mode_returns_once_listening_and_keeps_serving()
    {
        using var dir = new TempDir();
        using var w = new Memtouch(dir, mib: 4);
        var d = CrispCli.Run(dir, "dump", "-t", S(w.Pid), "-D", dir["img"], "-R");
        Assert.True(d.ExitCode == 0, d.ToString());
        // A port we pick: the background server's own output goes to /dev/null.
        var probe = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        probe.Start();
        int port = ((System.Net.IPEndPoint)probe.LocalEndpoint).Port;
        probe.Stop();
        var r = CrispCli.Run(dir, TimeSpan.FromSeconds(60), "page-server", "-d", "--lazy-pages", "-D", dir["img"], "--address", "127.0.0.1", "--port", S(port));
        Assert.True(r.ExitCode == 0, r.ToString());
        int daemon = int.Parse(System.Text.RegularExpressions.Regex.Match(r.Stdout, @"pid (\d+)").Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
        try
        {
            Assert.False(Gone(daemon), "the background page server is not running");
            Assert.NotEqual(Crisp.Native.ProcFs.Proc.Stat(Environment.ProcessId).Session, Crisp.Native.ProcFs.Proc.Stat(daemon).Session);
            using var source = new RemotePageSource(new System.Net.IPEndPoint(System.Net.IPAddress.Loopback, port));
            using var ch = source.OpenChannel();
            var (addr, sum) = w.Buffers[0];
            var buf = new byte[w.Mib << 20];
            ch.Read(w.Pid, addr, buf);
            Assert.Equal(sum, Memtouch.Checksum(buf));
        }
        finally
        {
            Crisp.Native.LibC.kill(daemon, Crisp.Native.LibC.SIGTERM);
            Assert.True(Poll.Until(() => Gone(daemon), 10_000), "the background page server ignored SIGTERM");
        }
    }

    [Fact]
    public void Lazy_dump_timing_over_loopback()
    {
        using var dir = new TempDir();
        using var w = new Memtouch(dir, mib: 256);
        var sw = System.Diagnostics.Stopwatch.StartNew();
        using var dump = new BackgroundCrisp(dir, "lazydump", "dump", "-t", S(w.Pid), "-D", dir["img"], "--lazy-pages", "--address", "127.0.0.1", "--port", "0");
        int port = dump.Port("lazy page server listening on");
        var ready = sw.Elapsed;
        using var pagemap = new ImageDir(dir["img"]).OpenPagemap(w.Pid);
        var lazy = pagemap.Runs.Where(r => r.IsLazy).ToList();
        using var source = new RemotePageSource(new System.Net.IPEndPoint(System.Net.IPAddress.Loopback, port));
        using var ch = source.OpenChannel();
        var chunk = new byte[4 << 20];
        var transfer = System.Diagnostics.Stopwatch.StartNew();
        ulong bytes = 0;
        foreach (var r in lazy)
            for (ulong p = r.Vaddr; p < r.End;)
            {
                int n = (int)Math.Min((ulong)chunk.Length, r.End - p);
                ch.Read(w.Pid, p, chunk.AsSpan(0, n));
                p += (ulong)n;
                bytes += (ulong)n;
            }
        var moved = transfer.Elapsed;
        Assert.Equal(0, dump.WaitExit(TimeSpan.FromSeconds(30)));
        Console.WriteLine($"lazy dump of 256 MiB: command start to page server listening {ready.TotalMilliseconds:F0} ms (incl. dotnet start-up); " +
                          $"{bytes >> 20} MiB pulled in {moved.TotalMilliseconds:F0} ms ({bytes / moved.TotalSeconds / (1 << 20):F0} MiB/s) over one channel");
    }

    [Fact]
    public void Lazy_dump_interrupted_before_any_page_resumes_the_process()
    {
        using var dir = new TempDir();
        using var w = new Memtouch(dir, mib: 4);
        using var dump = new BackgroundCrisp(dir, "lazydump", "dump", "-t", S(w.Pid), "-D", dir["img"], "--lazy-pages", "--address", "127.0.0.1", "--port", "0");
        dump.Port("lazy page server listening on");
        dump.Terminate();
        Assert.Equal(1, dump.WaitExit(TimeSpan.FromSeconds(20)));
        Assert.Contains("interrupted", Poll.ReadFile(dump.Stderr));
        Assert.StartsWith("check ok", w.Check(w.Pid));
    }
}
