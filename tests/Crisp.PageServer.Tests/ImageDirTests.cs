using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using Crisp.Images;
using Crisp.PageServer.Client;
using Crisp.PageServer.Server;
using Xunit;

namespace Crisp.PageServer.Tests;

/// <summary>Receive mode writing a real image directory, and lazy mode serving from it.</summary>
public sealed class ImageDirTests(Xunit.Abstractions.ITestOutputHelper _output) : IDisposable
{
    private static readonly IPEndPoint Loopback = new(IPAddress.Loopback, 0);
    private readonly string _dir = Directory.CreateTempSubdirectory("crisp-ps-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static byte[] Pages(int pid, ulong vaddr, int count)
    {
        var b = new byte[count * 4096];
        PatternPageSource.Fill(pid, vaddr, b);
        return b;
    }

    private async Task DumpTwoTasks(byte[] heap, byte[] stack, byte[] other)
    {
        var ended = new ConcurrentQueue<PageServerSessionResult>();
        await using var server = new TcpPageServer(new PageServerOptions
        {
            EndPoint = Loopback,
            Sink = new ImageDirPagemapSink(new ImageDir(_dir)),
        });
        server.SessionEnded += ended.Enqueue;
        server.Start();
        using (var client = PageServerClient.Connect(server.LocalEndPoint))
        {
            client.OpenPagemap(4000);
            client.SendPages(0x55_0000_0000, heap, PagemapFlags.Present | PagemapFlags.Lazy);
            client.SendEntry(0x56_0000_0000, 16, PagemapFlags.Lazy);
            client.SendPages(0x7ffd_0000_0000, stack);
            client.OpenPagemap(4001);
            client.SendPages(0x40_0000, other);
            client.Close();
        }
        await ReceiveModeTests.WaitUntil(() => !ended.IsEmpty);
        Assert.Equal(SessionOutcome.Completed, Assert.Single(ended).Outcome);
    }

    [Fact]
    public async Task Pages_sent_by_a_dump_land_in_pagemap_and_pages_images_that_read_back_identical_and_crit_accepts()
    {
        byte[] heap = Pages(4000, 0x55_0000_0000, 700), stack = Pages(4000, 0x7ffd_0000_0000, 33), other = Pages(4001, 0x40_0000, 1);
        await DumpTwoTasks(heap, stack, other);

        var dir = new ImageDir(_dir);
        using (var r = dir.OpenPagemap(4000))
        {
            Assert.Equal(
                [(0x55_0000_0000UL, 700UL, PagemapFlags.Present | PagemapFlags.Lazy), (0x56_0000_0000UL, 16UL, PagemapFlags.Lazy),
                 (0x7ffd_0000_0000UL, 33UL, PagemapFlags.Present)],
                r.Runs.Select(x => (x.Vaddr, x.NrPages, x.Flags)));
            var back = new byte[heap.Length];
            r.Read(0x55_0000_0000, back);
            Assert.Equal(heap, back);
            back = new byte[stack.Length];
            r.Read(0x7ffd_0000_0000, back);
            Assert.Equal(stack, back);
        }
        using (var r = dir.OpenPagemap(4001))
        {
            var back = new byte[4096];
            r.Read(0x40_0000, back);
            Assert.Equal(other, back);
        }

        string json = RunCrit(Path.Combine(_dir, "pagemap-4000.img"));
        _output.WriteLine(json);
        Assert.Contains("\"magic\": \"PAGEMAP\"", json);
        Assert.Contains("\"vaddr\": \"0x5500000000\"", json);
        Assert.Contains("\"nr_pages\": 700", json);
        Assert.Contains("\"flags\": \"PE_LAZY | PE_PRESENT\"", json);
        Assert.Contains("\"flags\": \"PE_LAZY\"", json);
        RunCrit(Path.Combine(_dir, "pagemap-4001.img"));
    }

    [Fact]
    public async Task A_failed_dump_leaves_no_pagemap_and_no_pages_file()
    {
        await using var server = new TcpPageServer(new PageServerOptions { EndPoint = Loopback, Sink = new ImageDirPagemapSink(new ImageDir(_dir)) });
        var ended = new ConcurrentQueue<PageServerSessionResult>();
        server.SessionEnded += ended.Enqueue;
        server.Start();
        using (var client = PageServerClient.Connect(server.LocalEndPoint))
        {
            client.OpenPagemap(5000);
            client.SendPages(0x1000, Pages(5000, 0x1000, 8));
        } // gone without CLOSE
        await ReceiveModeTests.WaitUntil(() => !ended.IsEmpty);
        Assert.Equal(SessionOutcome.PeerGone, Assert.Single(ended).Outcome);
        Assert.Empty(Directory.GetFiles(_dir));
    }

    [Fact]
    public async Task A_lazy_server_serves_the_received_images_to_three_restores_in_a_row()
    {
        byte[] heap = Pages(4000, 0x55_0000_0000, 700), stack = Pages(4000, 0x7ffd_0000_0000, 33), other = Pages(4001, 0x40_0000, 1);
        await DumpTwoTasks(heap, stack, other);

        using var images = new ImageDirPageSource(new ImageDir(_dir));
        var ended = new ConcurrentQueue<PageServerSessionResult>();
        await using var server = new TcpPageServer(new PageServerOptions { EndPoint = Loopback, Source = images });
        server.SessionEnded += ended.Enqueue;
        server.Start();

        for (int restore = 0; restore < 3; restore++)
        {
            using var remote = new RemotePageSource(server.LocalEndPoint);
            using var fault = remote.OpenChannel();
            using var bulk = remote.OpenChannel();
            var page = new byte[4096];
            fault.Read(4000, 0x7ffd_0000_0000 + 5 * 4096, page);
            Assert.Equal(stack.AsSpan(5 * 4096, 4096).ToArray(), page);
            var all = new byte[heap.Length];
            bulk.Read(4000, 0x55_0000_0000, all);
            Assert.Equal(heap, all);
            fault.Read(4001, 0x40_0000, page);
            Assert.Equal(other, page);
            // Pages the image does not have: the server hangs up, the client reports it.
            Assert.Throws<PageSourceException>(() => fault.Read(4000, 0x56_0000_0000, page));
        }
        await ReceiveModeTests.WaitUntil(() => ended.Count == 6);
        Assert.Equal(3, ended.Count(r => r.Outcome == SessionOutcome.SourceError));
        Assert.Equal(3, ended.Count(r => r.Outcome == SessionOutcome.Completed));
    }

    private static string RunCrit(string file)
    {
        Assert.True(File.Exists("/usr/bin/crit"), "crit (Debian criu) is required for this test");
        var psi = new ProcessStartInfo("/usr/bin/crit", ["decode", "-i", file, "--pretty"])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        using var p = Process.Start(psi)!;
        var err = p.StandardError.ReadToEndAsync();
        string output = p.StandardOutput.ReadToEnd();
        Assert.True(p.WaitForExit(60_000), "crit did not finish");
        Assert.True(p.ExitCode == 0, $"crit decode {file} failed: {err.Result}");
        return output;
    }
}

public sealed class DumpThroughputTests(Xunit.Abstractions.ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("crisp-ps-tp-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public async Task A_dump_of_512_MiB_into_an_image_dir_and_a_server_that_stops_after_the_first_session()
    {
        var dir = Directory.Exists("/dev/shm") ? Directory.CreateDirectory($"/dev/shm/crisp-ps-tp-{Guid.NewGuid():N}").FullName : _dir;
        try
        {
            await using var server = new TcpPageServer(new PageServerOptions
            {
                EndPoint = new IPEndPoint(IPAddress.Loopback, 0),
                Sink = new ImageDirPagemapSink(new ImageDir(dir)),
            });
            server.SessionEnded += _ => server.RequestStop(); // CRIU-like: one session, then exit
            server.Start();

            var chunk = new byte[4 << 20];
            const ulong Base = 0x7f00_0000_0000;
            var cpu0 = Process.GetCurrentProcess().TotalProcessorTime;
            var sw = Stopwatch.StartNew();
            using (var client = PageServerClient.Connect(server.LocalEndPoint))
            {
                client.OpenPagemap(9000);
                client.BeginPages(Base, (512 << 20) / 4096);
                for (int i = 0; i < 128; i++)
                {
                    PatternPageSource.Fill(9000, Base + (ulong)i * (ulong)chunk.Length, chunk);
                    client.WritePageData(chunk);
                }
                client.Close();
            }
            sw.Stop();
            var cpu = Process.GetCurrentProcess().TotalProcessorTime - cpu0;
            output.WriteLine($"512 MiB dump to {dir} (incl. pattern fill): {sw.Elapsed.TotalMilliseconds:F0} ms, " +
                             $"{512 / sw.Elapsed.TotalSeconds:F0} MB/s, CPU {cpu.TotalMilliseconds:F0} ms (client + server)");
            await server.Completion.WaitAsync(TimeSpan.FromSeconds(10));

            using var r = new ImageDir(dir).OpenPagemap(9000);
            Assert.Equal((512UL << 20) / 4096, r.PresentPages);
            r.Read(Base + (200UL << 20), chunk);
            Assert.Equal(-1, PatternPageSource.FirstBadPage(9000, Base + (200UL << 20), chunk));
        }
        finally
        {
            if (dir != _dir) Directory.Delete(dir, recursive: true);
        }
    }
}
