using Crisp.Images;
using Crisp.Images.Proto;
using Xunit;

namespace Crisp.Images.Tests;

/// <summary>crisp-nested-pids.img (crisp's own image): round trip, its magic, and entries a restore must not trust.</summary>
[Trait("Category", "Unit")]
public sealed class NestedPidsImageTests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("crisp-nestedpids-").FullName;

    public void Dispose() => Directory.Delete(_root, true);

    [Fact]
    public void Entries_come_back_as_written_behind_crisps_own_magic()
    {
        var dir = ImageDir.Create(_root);
        NestedPidsImage.Write(dir, [new NestedPid(40, [1], false), new NestedPid(42, [3, 1], true), new NestedPid(44, [4, 2], false)]);
        var read = NestedPidsImage.Read(dir);
        Assert.Equal([40, 42, 44], read.Keys.Order());
        Assert.Equal([3, 1], read[42].NsTids);
        Assert.True(read[42].ParentForksInto);
        Assert.False(read[44].ParentForksInto);
        var head = File.ReadAllBytes(dir.PathOf(NestedPidsImage.Name)).AsSpan(0, 8);
        Assert.Equal(ImageMagic.Common, BitConverter.ToUInt32(head));
        Assert.Equal(ImageMagic.CrispNestedPids, BitConverter.ToUInt32(head[4..]));
    }

    [Theory]
    [InlineData(new int[0])]
    [InlineData(new[] { 3, 0 })]
    public void An_entry_without_pids_or_with_pid_0_is_refused(int[] nsTids)
    {
        var dir = ImageDir.Create(_root);
        using (var w = new ImageWriter(dir.PathOf(NestedPidsImage.Name), ImageMagic.CrispNestedPids))
        {
            var e = new CrispNestedPidEntry { Tid = 7 };
            e.NsTids.AddRange(nsTids.Select(t => (uint)t));
            w.Write(e);
        }
        Assert.Throws<ImageException>(() => NestedPidsImage.Read(dir));
    }

    [Fact]
    public void A_task_listed_twice_is_refused()
    {
        var dir = ImageDir.Create(_root);
        NestedPidsImage.Write(dir, [new NestedPid(40, [1], false), new NestedPid(40, [2], false)]);
        Assert.Throws<ImageException>(() => NestedPidsImage.Read(dir));
    }
}
