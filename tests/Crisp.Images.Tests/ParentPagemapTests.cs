using Crisp.Images;
using Crisp.Images.Pages;
using Xunit;

namespace Crisp.Images.Tests;

/// <summary>PE_PARENT entries resolved through the images dir's parent link (CRIU's incremental dumps).</summary>
[Trait("Category", "Unit")]
public sealed class ParentPagemapTests : IDisposable
{
    private const int Page = PagemapRun.PageSize;
    private readonly string _root = Directory.CreateTempSubdirectory("crisp-parent-").FullName;

    public void Dispose() => Directory.Delete(_root, true);

    private static byte[] Fill(byte b, int pages) => Enumerable.Repeat(b, pages * Page).ToArray();

    private ImageDir Dir(string name, string? parent)
    {
        var d = ImageDir.Create(Path.Combine(_root, name));
        if (parent != null) File.CreateSymbolicLink(d.PathOf(PagemapReader.ParentLink), parent);
        return d;
    }

    [Fact]
    public void Parent_pages_read_through_a_chain_of_two_parents()
    {
        // grand: pages 0-7 = 1; parent: 2-3 = 2, rest PE_PARENT; child: 3 = 3, 0-2 and 4-7 PE_PARENT, 8 = 4.
        using (var w = Dir("grand", null).CreatePagemap(7)) { w.Write(0x10000, Fill(1, 8)); w.Complete(); }
        using (var w = Dir("parent", "../grand").CreatePagemap(7))
        {
            w.WriteHole(0x10000, 2, PagemapFlags.Parent);
            w.Write(0x10000 + 2 * Page, Fill(2, 2));
            w.WriteHole(0x10000 + 4 * Page, 4, PagemapFlags.Parent);
            w.Complete();
        }
        var child = Dir("child", "../parent");
        using (var w = child.CreatePagemap(7))
        {
            w.WriteHole(0x10000, 3, PagemapFlags.Parent);
            w.Write(0x10000 + 3 * Page, Fill(3, 1));
            w.WriteHole(0x10000 + 4 * Page, 4, PagemapFlags.Parent);
            w.Write(0x10000 + 8 * Page, Fill(4, 1));
            w.Complete();
        }
        using var pm = child.OpenPagemap(7);
        Assert.All(pm.Runs, r => Assert.True(r.IsPresent));
        Assert.Equal(9UL, pm.PresentPages);
        Assert.Equal(7UL, pm.ParentPages);
        Assert.Equal(2, pm.ParentDepth);
        var all = new byte[9 * Page];
        pm.Read(0x10000, all);
        byte[] want = [1, 1, 2, 3, 1, 1, 1, 1, 4];
        for (int i = 0; i < 9; i++) Assert.True(all.AsSpan(i * Page, Page).IndexOfAnyExcept(want[i]) < 0, $"page {i}");
    }

    [Fact]
    public void A_parent_page_missing_from_the_parent_is_an_image_error()
    {
        using (var w = Dir("parent", null).CreatePagemap(7)) { w.Write(0x10000, Fill(1, 2)); w.Complete(); }
        var child = Dir("child", "../parent");
        using (var w = child.CreatePagemap(7)) { w.WriteHole(0x10000, 3, PagemapFlags.Parent); w.Complete(); }
        var e = Assert.Throws<ImageException>(() => child.OpenPagemap(7));
        Assert.Contains("0x12000", e.Message);
    }

    [Fact]
    public void Parent_entries_without_a_parent_link_are_an_image_error()
    {
        var child = Dir("child", null);
        using (var w = child.CreatePagemap(7)) { w.WriteHole(0x10000, 1, PagemapFlags.Parent); w.Complete(); }
        Assert.Throws<ImageException>(() => child.OpenPagemap(7));
    }
}
