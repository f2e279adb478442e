using Crisp.Images;
using Crisp.Images.Proto;
using Xunit;

namespace Crisp.Images.Tests;

/// <summary>The images of a network namespace the tree owned: CRIU's names and magics, raw images as written.</summary>
[Trait("Category", "Unit")]
public sealed class NetnsImagesTests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("crisp-netns-").FullName;

    public void Dispose() => Directory.Delete(_root, true);

    [Fact]
    public void Devices_and_raw_images_come_back_as_written_under_criu_names()
    {
        var dir = ImageDir.Create(_root);
        var images = new NetnsImages
        {
            Devices = [new NetDeviceEntry { Type = NdType.Loopback, Ifindex = 1, Mtu = 60000, Flags = 0x10049, Name = "lo" }],
            Raw = { ["ifaddr"] = [0x24, 0x12, 0x31, 0x45, 1, 2], ["nftables"] = "table inet t {\n}\n"u8.ToArray() },
        };
        images.Write(dir, 9);
        foreach (var name in new[] { "netns-9.img", "netdev-9.img", "ifaddr-9.img", "nftables-9.img" })
            Assert.True(dir.Exists(name), name);
        Assert.False(dir.Exists("iptables-9.img"));
        var head = File.ReadAllBytes(dir.PathOf("netdev-9.img")).AsSpan(0, 8);
        Assert.Equal(ImageMagic.Common, BitConverter.ToUInt32(head));
        Assert.Equal(0x57373951u, BitConverter.ToUInt32(head[4..]));   // NETDEV_MAGIC
        Assert.Equal(0x55933752u, BitConverter.ToUInt32(File.ReadAllBytes(dir.PathOf("netns-9.img")).AsSpan(4, 4)));   // NETNS_MAGIC
        Assert.Equal(images.Raw["ifaddr"], File.ReadAllBytes(dir.PathOf("ifaddr-9.img")));   // raw: no magic in front

        var read = NetnsImages.Read(dir, 9);
        Assert.Equal(60000u, read.Devices.Single().Mtu);
        Assert.Equal("lo", read.Devices.Single().Name);
        Assert.Equal(["ifaddr", "nftables"], read.Raw.Keys.Order());
        Assert.Equal(images.Raw["nftables"], read.Raw["nftables"]);
    }

    [Fact]
    public void An_unknown_raw_kind_is_not_written()
    {
        var images = new NetnsImages { Raw = { ["conntrack"] = [1] } };
        Assert.Throws<ArgumentException>(() => images.Write(ImageDir.Create(_root), 9));
    }
}
