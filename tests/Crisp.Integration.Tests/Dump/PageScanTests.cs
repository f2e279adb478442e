using Crisp.TestSupport;
using Crisp.Checkpoint.Dump;
using Crisp.Native;
using Crisp.Native.ProcFs;
using Xunit;
using static Crisp.TestSupport.TestProcesses;

namespace Crisp.Integration.Tests.Dump;

/// <summary>PAGEMAP_SCAN and the pagemap file must pick exactly the same pages to dump.</summary>
public sealed class PageScanTests() : LiveProcessTest("pagescan")
{
    [Fact]
    public void Scan_and_pagemap_agree_on_written_zero_untouched_and_cow_pages()
    {
        string exe = Gcc.Workload("pagekinds"), data = Path.Combine(Dir, "data"), ready = Path.Combine(Dir, "ready");
        File.WriteAllBytes(data, new byte[64 * 1024]);
        int pid = ProcessSpawner.Spawn(new SpawnOptions
        {
            Path = exe, Argv = [exe, data, ready], Envp = ["LANG=C"],
            Stdin = StdioSource.DevNull(false), Stdout = StdioSource.DevNull(true), Stderr = StdioSource.DevNull(true),
        });
        Pids.Add(pid);
        var line = WaitForLine(ready, l => l.StartsWith("ready "));
        ulong anon = Convert.ToUInt64(line.Split(' ')[1], 16), file = Convert.ToUInt64(line.Split(' ')[2], 16);
        LibC.kill(pid, LibC.SIGSTOP);
        for (int i = 0; i < 200 && Proc.Stat(pid).State != 'T'; i++) Thread.Sleep(10);

        var vmas = MemoryDump.Vmas(pid, new FileTable());
        var scan = MemoryDump.ScanRuns(pid, vmas);
        var pagemap = MemoryDump.PagemapRuns(pid, vmas);
        Assert.NotNull(scan); // Linux 6.7+ has PAGEMAP_SCAN
        Assert.Equal(pagemap, scan);

        int In(ulong start, ulong len) => scan!.Where(r => r.Vaddr >= start && r.Vaddr < start + len).Sum(r => r.Pages);
        // Pages only read are the shared zero page where the kernel maps it for read faults (the
        // same pfn for pages 1 and 4), and then are not dumped; some kernels allocate real pages.
        var e = new ulong[5];
        using (var pm = new ProcPagemap(pid)) pm.Read(anon, e);
        bool zeroPage = (e[1] & ((1UL << 55) - 1)) == (e[4] & ((1UL << 55) - 1));
        Assert.Equal(zeroPage ? 342 : 683, In(anon, 1024 * 4096)); // never the untouched ones
        Assert.Equal(1, In(file, 16 * 4096));     // the copy-on-written page, not the one read from the file
    }
}
