using Crisp.LazyPages;
using static Crisp.TestSupport.TestProcesses;

namespace Crisp.LazyPages.Tests;

/// <summary>The recorded fault order's file (Prefetch/WorkingSet.cs): what is written reads back the same, merged and in order.</summary>
public sealed class WorkingSetTests : IDisposable
{
    private readonly string _dir = TempDir("workingset");

    public void Dispose() => Directory.Delete(_dir, true);

    [Fact]
    public void Order_is_kept_and_consecutive_windows_merge()
    {
        string path = Path.Combine(_dir, WorkingSet.FileName);
        IReadOnlyList<(ulong, ulong)> a = [(0x20000, 0x30000), (0x30000, 0x31000), (0x10000, 0x11000), (0x10000, 0x10000)];
        IReadOnlyList<(ulong, ulong)> none = [];
        WorkingSet.Write(path, [(41, a), (42, none)]);
        var back = WorkingSet.Read(path);
        Assert.Equal([41], back.Keys);
        Assert.Equal([(0x20000UL, 0x31000UL), (0x10000UL, 0x11000UL)], back[41]);
        Assert.False(File.Exists(path + ".tmp"));
    }

    [Fact]
    public void A_file_that_is_not_an_order_is_refused()
    {
        string path = Path.Combine(_dir, "bad");
        File.WriteAllText(path, "crisp-prefetch-order 1\npid 7\n1001 2\n"); // not page aligned
        Assert.Throws<FormatException>(() => WorkingSet.Read(path));
        File.WriteAllText(path, "something else\n");
        Assert.Throws<FormatException>(() => WorkingSet.Read(path));
        File.WriteAllText(path, "crisp-prefetch-order 1\n1000 2\n"); // a range before any pid
        Assert.Throws<FormatException>(() => WorkingSet.Read(path));
    }
}
