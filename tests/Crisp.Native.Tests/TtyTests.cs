using System.Globalization;
using Crisp.TestSupport;
using Xunit;

namespace Crisp.Native.Tests;

/// <summary>Device numbers of terminals, the kernel's termios and winsize, packet-mode reads, pts paths.</summary>
[Trait("Category", "Unit")]
public class TtyParsingTests
{
    private static ulong Dev(uint major, uint minor) =>
        (minor & 0xff) | ((ulong)(major & 0xfff) << 8) | ((ulong)(minor & ~0xffu) << 12) | ((ulong)(major & ~0xfffu) << 32);

    [Theory]
    [InlineData(5, 2, TtyKind.PtyMaster, -1)]
    [InlineData(128, 7, TtyKind.PtyMaster, -1)]
    [InlineData(136, 0, TtyKind.PtySlave, 0)]
    [InlineData(136, 255, TtyKind.PtySlave, 255)]
    [InlineData(137, 5, TtyKind.PtySlave, 261)]
    [InlineData(5, 0, TtyKind.CurrentTty, -1)]
    [InlineData(5, 1, TtyKind.Console, -1)]
    [InlineData(4, 1, TtyKind.VirtualConsole, -1)]
    [InlineData(4, 64, TtyKind.Serial, -1)]
    [InlineData(188, 0, TtyKind.Serial, -1)]
    [InlineData(1, 3, TtyKind.None, -1)]
    public void Device_numbers_name_the_terminal_kind_and_pty_index(uint major, uint minor, TtyKind kind, int index)
    {
        Assert.Equal((kind, index), Tty.Classify(Dev(major, minor)));
        Assert.Equal((major, minor), (Tty.Major(Dev(major, minor)), Tty.Minor(Dev(major, minor))));
    }

    [Theory]
    [InlineData(0)]
    [InlineData(3)]
    [InlineData(255)]
    [InlineData(256)]
    [InlineData(1000)]
    public void A_slave_index_and_its_device_number_agree(int index)
    {
        Assert.Equal((TtyKind.PtySlave, index), Tty.Classify(Tty.SlaveRdev(index)));
        // /proc/PID/stat's tty_nr uses the same encoding as stat's st_rdev.
        Assert.Equal(Tty.SlaveRdev(index), Tty.RdevOfTtyNr((int)Tty.SlaveRdev(index)));
    }

    [Fact]
    public void Termios_round_trips_through_the_kernel_layout()
    {
        // A pty slave's defaults as TCGETS gave them on this machine: iflag ICRNL|IXON, oflag OPOST|ONLCR, B38400|CS8|CREAD|HUPCL, ISIG|ICANON|ECHO...
        var raw = new byte[Tty.TermiosSize];
        BitConverter.TryWriteBytes(raw.AsSpan(0), 0x500u);
        BitConverter.TryWriteBytes(raw.AsSpan(4), 0x5u);
        BitConverter.TryWriteBytes(raw.AsSpan(8), 0xbfu);
        BitConverter.TryWriteBytes(raw.AsSpan(12), 0x8a3bu);
        raw[16] = 0;
        byte[] cc = [3, 28, 127, 21, 4, 0, 1, 0, 17, 19, 26, 0, 18, 15, 23, 22, 0, 0, 0];
        cc.CopyTo(raw, 17);
        var t = Tty.Termios.Parse(raw);
        Assert.Equal((0x500u, 0x5u, 0xbfu, 0x8a3bu, (byte)0), (t.Iflag, t.Oflag, t.Cflag, t.Lflag, t.Line));
        Assert.Equal(cc, t.Cc);
        Assert.Equal(raw, t.ToBytes());
        Assert.Equal(36, Tty.TermiosSize);
    }

    [Fact]
    public void Without_echo_keeps_canonical_mode_and_signals()
    {
        var t = new Tty.Termios(0x500, 0x5, 0xbf, 0x8a3b, 0, new byte[Tty.Nccs]);
        var quiet = t.WithoutEcho();
        Assert.Equal(0u, quiet.Lflag & (Tty.ECHO | Tty.ECHOE | Tty.ECHOK | Tty.ECHONL | Tty.ECHOCTL | Tty.ECHOKE));
        Assert.Equal(0x3u, quiet.Lflag & 0x3);   // ISIG | ICANON stay
        Assert.Equal(t with { Lflag = quiet.Lflag }, quiet);
    }

    [Fact]
    public void A_short_termios_is_refused()
    {
        Assert.Throws<ArgumentException>(() => Tty.Termios.Parse(new byte[20]));
        Assert.Throws<ArgumentException>(() => new Tty.Termios(0, 0, 0, 0, 0, new byte[5]).ToBytes());
    }

    [Fact]
    public void Winsize_is_four_u16()
    {
        var w = new Tty.Winsize(24, 80, 640, 480);
        Assert.Equal(new byte[] { 24, 0, 80, 0, 128, 2, 224, 1 }, w.ToBytes());
        Assert.Equal(w, Tty.Winsize.Parse(w.ToBytes()));
    }

    [Fact]
    public void Packet_mode_reads_carry_data_only_after_a_zero_status_byte()
    {
        Assert.Equal("hi"u8.ToArray(), Tty.PacketData([0, (byte)'h', (byte)'i']).ToArray());
        Assert.True(Tty.PacketData([0x02]).IsEmpty);      // TIOCPKT_FLUSHWRITE alone
        Assert.True(Tty.PacketData([]).IsEmpty);
    }

    [Theory]
    [InlineData("/dev/pts/0", 0)]
    [InlineData("/dev/pts/17", 17)]
    [InlineData("/mnt/chroot/dev/pts/3", 3)]
    [InlineData("/dev/ptmx", -1)]
    [InlineData("/dev/pts/ptmx", -1)]
    [InlineData("/dev/tty1", -1)]
    [InlineData("/dev/pts/-1", -1)]
    public void The_index_of_a_pts_path(string path, int index) => Assert.Equal(index, Tty.PtsIndex(path));
}

/// <summary>The ioctl numbers and struct sizes in Tty against the kernel's headers, compiled by gcc.</summary>
public class TtyHeaderTests
{
    [Fact]
    public void Ioctl_numbers_and_sizes_match_the_kernel_headers()
    {
        using var dir = new TempDir();
        string output = Gcc.Run(dir, "tty", """
            #include <stdio.h>
            #include <asm/termbits.h>
            #include <asm/ioctls.h>
            #include <sys/ioctl.h>
            #define C(n) printf("%s %llu\n", #n, (unsigned long long)(n))
            int main(void) {
              C(TCGETS); C(TCSETS); C(TIOCEXCL); C(TIOCSCTTY); C(TIOCGPGRP); C(TIOCSPGRP); C(TIOCSTI); C(TIOCGWINSZ);
              C(TIOCSWINSZ); C(FIONREAD); C(TIOCPKT); C(TIOCGSID); C(TIOCGPTN); C(TIOCSPTLCK); C(TIOCGPKT); C(TIOCGPTLCK);
              C(TIOCGEXCL); C(TIOCGPTPEER); C(TIOCGLCKTRMIOS); C(TIOCSLCKTRMIOS); C(NCCS); printf("sizeof_termios %zu\n", sizeof(struct termios));
              printf("sizeof_winsize %zu\n", sizeof(struct winsize)); C(ECHO); C(ECHOE); C(ECHOK); C(ECHONL); C(ECHOCTL); C(ECHOKE); C(OPOST);
              return 0;
            }
            """);
        var v = output.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => l.Split(' '))
            .ToDictionary(p => p[0], p => ulong.Parse(p[1], CultureInfo.InvariantCulture));
        Assert.Equal(Tty.TCGETS, v["TCGETS"]);
        Assert.Equal(Tty.TCSETS, v["TCSETS"]);
        Assert.Equal(Tty.TIOCEXCL, v["TIOCEXCL"]);
        Assert.Equal(Tty.TIOCSCTTY, v["TIOCSCTTY"]);
        Assert.Equal(Tty.TIOCGPGRP, v["TIOCGPGRP"]);
        Assert.Equal(Tty.TIOCSPGRP, v["TIOCSPGRP"]);
        Assert.Equal(Tty.TIOCSTI, v["TIOCSTI"]);
        Assert.Equal(Tty.TIOCGWINSZ, v["TIOCGWINSZ"]);
        Assert.Equal(Tty.TIOCSWINSZ, v["TIOCSWINSZ"]);
        Assert.Equal(Tty.FIONREAD, v["FIONREAD"]);
        Assert.Equal(Tty.TIOCPKT, v["TIOCPKT"]);
        Assert.Equal(Tty.TIOCGSID, v["TIOCGSID"]);
        Assert.Equal(Tty.TIOCGPTN, v["TIOCGPTN"]);
        Assert.Equal(Tty.TIOCSPTLCK, v["TIOCSPTLCK"]);
        Assert.Equal(Tty.TIOCGPKT, v["TIOCGPKT"]);
        Assert.Equal(Tty.TIOCGPTLCK, v["TIOCGPTLCK"]);
        Assert.Equal(Tty.TIOCGEXCL, v["TIOCGEXCL"]);
        Assert.Equal(Tty.TIOCGPTPEER, v["TIOCGPTPEER"]);
        Assert.Equal(Tty.TIOCGLCKTRMIOS, v["TIOCGLCKTRMIOS"]);
        Assert.Equal(Tty.TIOCSLCKTRMIOS, v["TIOCSLCKTRMIOS"]);
        Assert.Equal((ulong)Tty.Nccs, v["NCCS"]);
        Assert.Equal((ulong)Tty.TermiosSize, v["sizeof_termios"]);
        Assert.Equal((ulong)Tty.WinsizeSize, v["sizeof_winsize"]);
        Assert.Equal((ulong)(Tty.ECHO | Tty.ECHOE | Tty.ECHOK | Tty.ECHONL | Tty.ECHOCTL | Tty.ECHOKE),
            v["ECHO"] | v["ECHOE"] | v["ECHOK"] | v["ECHONL"] | v["ECHOCTL"] | v["ECHOKE"]);
        Assert.Equal((ulong)Tty.OPOST, v["OPOST"]);
    }
}
