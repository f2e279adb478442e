using System.Text;
using Crisp.Images.Pages;
using Crisp.LazyPages;
using Xunit.Abstractions;

namespace Crisp.LazyPages.Tests;

/// <summary>Runs only with CRISP_LAZY_BENCH=1 (reported as skipped otherwise): the measurements behind LazyPagesPolicy.</summary>
public sealed class BenchFactAttribute : FactAttribute
{
    public BenchFactAttribute()
    {
        if (Environment.GetEnvironmentVariable("CRISP_LAZY_BENCH") != "1") Skip = "benchmark: set CRISP_LAZY_BENCH=1";
    }
}

public sealed class BenchTests(ITestOutputHelper output)
{
    private const ulong Base = 0x600000000000UL;

    private static string One(byte[] image, int mib, string pattern, string finish, LazyPagesPolicy policy, int count = 0)
    {
        string bench = NativePrograms.Build("lazy_bench");
        ulong pages = (ulong)mib * 256;
        var plan = new LazyPlan(1, [new LazyVma(Base, Base + pages * 4096)], [new PageRange(Base, pages)]);
        using var source = MemoryPageSource.FromBytes(1, Base, image);
        using var d = new RunningDaemon(source, _ => plan, policy);
        var args = new List<string> { d.SocketPath, mib.ToString(), pattern, finish };
        if (count > 0) args.Add(count.ToString());
        var (exit, stdout, stderr, timedOut) = NativePrograms.Run(bench, TimeSpan.FromSeconds(120), args.ToArray());
        Assert.False(timedOut);
        Assert.True(exit == 0, stderr);
        Assert.True(d.WaitExit(TimeSpan.FromSeconds(60)));
        var st = d.Daemon.Stats;
        return $"{pattern,-4} {finish,-12} around={policy.FaultAroundPages,3} seqmax={policy.SequentialMaxPages,4} chunk={policy.PrefetchChunkPages,4}: " +
               $"{stdout.Trim()} daemon={st.Elapsed.TotalSeconds:F3}s faults={st.Faults} copies={st.Copies} p50={st.LatencyPercentileMicros(50):F1}us p99={st.LatencyPercentileMicros(99):F1}us " +
               $"byfault={st.FaultPages} around={st.FaultAroundPages} prefetch={st.PrefetchPages}";
    }

    [BenchFact]
    public void Fault_around_and_chunk_sizes()
    {
        const int mib = 256;
        var image = new byte[mib << 20];
        Pattern.Fill(Base, image);
        var sb = new StringBuilder();
        // the machine is shared: each configuration runs three times, the fastest is kept
        void Run(string pattern, string finish, int around, int seqmax, int chunk, int count = 0)
        {
            string best = "";
            double bestT = double.MaxValue;
            for (int i = 0; i < 3; i++)
            {
                string line = One(image, mib, pattern, finish, new LazyPagesPolicy { FaultAroundPages = around, SequentialMaxPages = seqmax, PrefetchChunkPages = chunk }, count);
                double t = double.Parse(line[(line.IndexOf("touch_s=") + 8)..].Split(' ')[0], System.Globalization.CultureInfo.InvariantCulture);
                if (t < bestT) { bestT = t; best = line; }
            }
            output.WriteLine(best);
            sb.AppendLine(best);
        }
        Run("seq", "finish=after", 16, 256, 128); // warm-up (JIT)
        foreach (var (a, s) in new[] { (1, 1), (4, 4), (16, 16), (64, 64), (16, 64), (16, 128), (16, 256), (16, 512) })
            Run("seq", "finish=after", a, s, 128);
        foreach (int a in new[] { 1, 4, 16, 64 })
            Run("rand", "finish=after", a, 256, 128, 8192);
        foreach (int c in new[] { 32, 128, 512 })
            Run("rand", "finish=now", 16, 256, c, 2048);
        File.WriteAllText(Path.Combine(Path.GetTempPath(), "crisp-lazy-bench.txt"), sb.ToString());
    }

    [BenchFact]
    public void Sequential_touch_while_prefetching()
    {
        const int mib = 256;
        var image = new byte[mib << 20];
        Pattern.Fill(Base, image);
        for (int i = 0; i < 3; i++)
            foreach (int c in new[] { 128, 512 })
                output.WriteLine(One(image, mib, "seq", "finish=now", new LazyPagesPolicy { PrefetchChunkPages = c }));
        for (int i = 0; i < 2; i++)
            output.WriteLine(One(image, mib, "seq", "finish=after", new LazyPagesPolicy()));
        for (int i = 0; i < 2; i++)
            output.WriteLine(One(image, mib, "seq", "finish=now-wait", new LazyPagesPolicy()));
    }
}
