using Google.Protobuf;
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
    public void Sysctls_are_on_criu_field_numbers_and_come_back()
    {
        var qlen = new SysctlEntry { Type = SysctlType.Ctl32, Iarg = 10 };
        // netns_entry.unix_conf = 9, sysctl_entry {type = 1 (CTL_32 = 6), iarg = 2}
        Assert.Equal(new byte[] { 0x4a, 4, 0x08, 6, 0x10, 10 }, new NetnsEntry { UnixConf = { qlen } }.ToByteArray());
        // all_conf4 = 4, def_conf6 = 5; a CTL_STR (5) with sarg = 3; an entry with no value keeps only its type
        Assert.Equal(new byte[] { 0x22, 2, 0x08, 6, 0x2a, 5, 0x08, 5, 0x1a, 1, (byte)'x' },
            new NetnsEntry { AllConf4 = { new SysctlEntry { Type = SysctlType.Ctl32 } }, DefConf6 = { new SysctlEntry { Type = SysctlType.CtlStr, Sarg = "x" } } }.ToByteArray());
        // net_device_entry.conf4 = 9, conf6 = 10
        var lo = new NetDeviceEntry { Type = NdType.Loopback, Ifindex = 1, Mtu = 65536, Flags = 0x49, Name = "lo", Conf4 = { qlen }, Conf6 = { qlen } };
        var bytes = lo.ToByteArray();
        Assert.Equal(new byte[] { 0x4a, 4, 0x08, 6, 0x10, 10, 0x52, 4, 0x08, 6, 0x10, 10 }, bytes[^12..]);

        var dir = ImageDir.Create(_root);
        new NetnsImages
        {
            Netns = { DefConf4 = { qlen }, Ipv4Sysctl = { new SysctlEntry { Type = SysctlType.CtlStr, Sarg = "0\t4242\n" } } },
            Devices = [lo],
        }.Write(dir, 3);
        var read = NetnsImages.Read(dir, 3);
        Assert.Equal(10, read.Netns.DefConf4.Single().Iarg);
        Assert.Equal("0\t4242\n", read.Netns.Ipv4Sysctl.Single().Sarg);
        Assert.Empty(read.Netns.AllConf4);
        Assert.Equal(lo, read.Devices.Single());
    }

    [Fact]
    public void An_unknown_raw_kind_is_not_written()
    {
        var images = new NetnsImages { Raw = { ["conntrack"] = [1] } };
        Assert.Throws<ArgumentException>(() => images.Write(ImageDir.Create(_root), 9));
    }
}
