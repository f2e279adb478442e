using Crisp.Images;
using Crisp.PageServer.Protocol;
using Xunit;

namespace Crisp.PageServer.Tests;

[Trait("Category", "Unit")]
public class CodecTests
{
    [Fact]
    public void Header_is_32_bytes_cmd_padding_then_three_u64_in_host_order()
    {
        var iov = PageServerIov.AddF(PagemapFlags.Present | PagemapFlags.Lazy, 0x7f12_3456_7000, 3,
            PageServerIov.EncodeDstId(PagemapKind.Process, 1234));
        var bytes = new byte[PageServerIov.Size];
        iov.WriteTo(bytes);

        byte[] expected =
        [
            0x06, 0x00, 0x06, 0x00, // cmd = (PE_PRESENT|PE_LAZY) << 16 | ADD_F
            0x00, 0x00, 0x00, 0x00, // padding
            0x03, 0, 0, 0, 0, 0, 0, 0, // nr_pages
            0x00, 0x70, 0x56, 0x34, 0x12, 0x7f, 0, 0, // vaddr
            0x01, 0xd2, 0x04, 0, 0, 0, 0, 0, // dst_id = 1234 << 8 | 1
        ];
        Assert.Equal(expected, bytes);
        Assert.Equal(32, PageServerIov.Size);
    }

    [Theory]
    [InlineData(PageServerOp.Add, 1u)]
    [InlineData(PageServerOp.Hole, 2u)]
    [InlineData(PageServerOp.Open, 3u)]
    [InlineData(PageServerOp.Open2, 4u)]
    [InlineData(PageServerOp.Parent, 5u)]
    [InlineData(PageServerOp.AddF, 6u)]
    [InlineData(PageServerOp.Get, 7u)]
    [InlineData(PageServerOp.Close, 0x1023u)]
    [InlineData(PageServerOp.ForceClose, 0x1024u)]
    public void Command_codes_match_criu(PageServerOp op, uint code)
    {
        Assert.Equal(code, PageServerIov.EncodeCmd(op));
        Assert.Equal(code | 4u << 16, PageServerIov.EncodeCmd(op, 4));
        var iov = new PageServerIov(PageServerIov.EncodeCmd(op, 5), 0, 0, 0);
        Assert.Equal(op, iov.Op);
        Assert.Equal(5u, iov.Flags);
    }

    [Fact]
    public void Pagemap_flags_are_criu_pe_bits()
    {
        Assert.Equal(1u, (uint)PagemapFlags.Parent);
        Assert.Equal(2u, (uint)PagemapFlags.Lazy);
        Assert.Equal(4u, (uint)PagemapFlags.Present);
    }

    [Fact]
    public void Roundtrip_keeps_every_field_and_ignores_padding()
    {
        var iov = new PageServerIov(0xABCD_0006, ulong.MaxValue - 1, 0xFFFF_FFFF_FFFF_F000, 0x1234_5678_9ABC_DE01);
        var bytes = new byte[40];
        iov.WriteTo(bytes);
        bytes[4] = 0xEE; bytes[7] = 0x55; // CRIU leaves padding uninitialised
        Assert.Equal(iov, PageServerIov.Read(bytes));
    }

    [Theory]
    [InlineData(1, PagemapKind.Process)]
    [InlineData(10, PagemapKind.Process)]
    [InlineData(11, PagemapKind.Process)]
    [InlineData(16, PagemapKind.Process)]
    [InlineData(17, PagemapKind.Process)]
    [InlineData(2, PagemapKind.Shmem)]
    [InlineData(34, PagemapKind.Shmem)]
    public void DstId_types_including_older_criu_numbers(byte type, PagemapKind kind)
    {
        Assert.True(PageServerIov.TryDecodeDstId(77UL << 8 | type, out var k, out var id));
        Assert.Equal(kind, k);
        Assert.Equal(77UL, id);
    }

    [Fact]
    public void DstId_unknown_type_is_refused()
    {
        Assert.False(PageServerIov.TryDecodeDstId(77UL << 8 | 3, out _, out _));
        Assert.Equal(4321UL << 8 | 1, PageServerIov.EncodeDstId(PagemapKind.Process, 4321));
    }

    [Fact]
    public void Get_carries_the_plain_pid_in_dst_id_like_criu_lazy_pages()
    {
        var get = PageServerIov.Get(4321, 0x1000, 16);
        Assert.Equal(PageServerOp.Get, get.Op);
        Assert.Equal(4321UL, get.DstId);
        Assert.Equal(16UL, get.NrPages);
        Assert.Equal(0x1000UL, get.Vaddr);
    }

    [Fact]
    public void Close_and_open2_headers()
    {
        Assert.Equal(new PageServerIov(0x1023, 0, 0, 0), PageServerIov.Close());
        Assert.Equal(new PageServerIov(0x1024, 0, 0, 0), PageServerIov.Close(force: true));
        Assert.Equal(new PageServerIov(4, 0, 0, 99UL << 8 | 1), PageServerIov.Open2(PagemapKind.Process, 99));
    }
}

[Trait("Category", "Unit")]
public class PageServerAddressTests
{
    [Theory]
    [InlineData("127.0.0.1", "127.0.0.1")]
    [InlineData("::1", "::1")]
    [InlineData("[::1]", "::1")]
    [InlineData("0.0.0.0", "0.0.0.0")]
    public void Listen_literals(string text, string expected)
    {
        var ep = PageServerAddress.ParseListen(text, 1234);
        Assert.Equal(System.Net.IPAddress.Parse(expected), ep.Address);
        Assert.Equal(1234, ep.Port);
    }

    [Fact]
    public void Listen_refuses_names_and_bad_ports()
    {
        Assert.Throws<ArgumentException>(() => PageServerAddress.ParseListen("localhost", 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => PageServerAddress.ParseListen("::1", 70000));
        Assert.Equal(System.Net.IPAddress.IPv6Any, PageServerAddress.ParseListen(null, 0).Address);
    }

    [Fact]
    public void Resolve_accepts_names()
    {
        Assert.True(System.Net.IPAddress.IsLoopback(PageServerAddress.Resolve("localhost", 27).Address));
        Assert.Throws<ArgumentOutOfRangeException>(() => PageServerAddress.Resolve("::1", 0));
    }
}
