using Crisp.Images.Pages;
using Crisp.LazyPages;

namespace Crisp.LazyPages.Tests;

[Trait("Category", "Unit")]
public sealed class PageRangeSetTests
{
    private const ulong P = 4096;

    [Fact]
    public void Remove_cuts_ranges_and_keeps_image_addresses()
    {
        var s = new PageRangeSet([new PendingRange(0x10000, 0x20000, 0x10000)]);
        var taken = s.Remove(0x12000, 0x14000);
        Assert.Equal([new PendingRange(0x12000, 0x14000, 0x12000)], taken);
        Assert.Equal([new PendingRange(0x10000, 0x12000, 0x10000), new PendingRange(0x14000, 0x20000, 0x14000)], s.Ranges);
        Assert.Equal(14, s.Pages);
    }

    [Fact]
    public void Add_merges_only_when_image_addresses_continue()
    {
        var s = new PageRangeSet();
        s.Add(new PendingRange(0x10000, 0x11000, 0x10000));
        s.Add(new PendingRange(0x11000, 0x12000, 0x11000));
        Assert.Single(s.Ranges);
        s.Add(new PendingRange(0x12000, 0x13000, 0x99000)); // moved data: must stay apart
        Assert.Equal(2, s.Count);
        Assert.Throws<InvalidOperationException>(() => s.Add(new PendingRange(0x10800, 0x11800, 0)));
    }

    [Fact]
    public void Remap_moves_the_range_and_the_image_address_stays()
    {
        var s = new PageRangeSet([new PendingRange(0x10000, 0x20000, 0x10000)]);
        s.Remap(0x18000, 0x80000, 0x4000);
        Assert.True(s.TryFind(0x81000, out var r));
        Assert.Equal(0x19000UL, r.ImageAddressOf(0x81000));
        Assert.False(s.TryFind(0x18000, out _));
        Assert.True(s.TryFind(0x1c000, out _));
        Assert.Equal(16, s.Pages);
    }

    [Fact]
    public void Lookups()
    {
        var s = new PageRangeSet([new PendingRange(0x10000, 0x12000, 0x10000), new PendingRange(0x30000, 0x31000, 0x30000)]);
        Assert.False(s.TryFind(0x12000, out _));
        Assert.Equal(0x30000UL, s.FirstAtOrAfter(0x12000)!.Value.Start);
        Assert.Equal(0x10000UL, s.FirstAtOrAfter(0x40000)!.Value.Start); // wraps
        Assert.Equal(0x11000UL, s.NextStartAtOrAfter(0x11000));
        var c = s.Clone();
        c.Remove(0, ulong.MaxValue);
        Assert.True(c.IsEmpty);
        Assert.Equal(3, s.Pages);
    }

    [Fact]
    public void Plan_clips_data_to_lazy_VMAs()
    {
        var plan = new LazyPlan(1, [new LazyVma(0x10000, 0x20000), new LazyVma(0x30000, 0x40000)],
            [new PageRange(0x8000, 0x10), new PageRange(0x1f000, 0x12)]);
        var p = plan.ToPending();
        Assert.Equal([new PendingRange(0x10000, 0x18000, 0x10000), new PendingRange(0x1f000, 0x20000, 0x1f000), new PendingRange(0x30000, 0x31000, 0x30000)], p.Ranges);
    }
}
