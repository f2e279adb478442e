using System.Buffers.Binary;

namespace Crisp.Native;

/// <summary>
/// Terminal ioctls (asm-generic/ioctls.h, x86-64 values) and the kernel's own struct termios
/// and struct winsize as TCGETS and TIOCGWINSZ fill them (not glibc's termios, which is larger).
/// The parsing here is pure and unit-tested.
/// </summary>
public static class Tty
{
    public const ulong TCGETS = 0x5401, TCSETS = 0x5402, TIOCEXCL = 0x540C, TIOCSCTTY = 0x540E, TIOCGPGRP = 0x540F,
        TIOCSPGRP = 0x5410, TIOCSTI = 0x5412, TIOCGWINSZ = 0x5413, TIOCSWINSZ = 0x5414, FIONREAD = 0x541B,
        TIOCPKT = 0x5420, TIOCGSID = 0x5429, TIOCGPTN = 0x80045430, TIOCSPTLCK = 0x40045431,
        TIOCGPKT = 0x80045438, TIOCGPTLCK = 0x80045439, TIOCGEXCL = 0x80045440, TIOCGPTPEER = 0x5441,
        TIOCGLCKTRMIOS = 0x5456, TIOCSLCKTRMIOS = 0x5457;

    /// <summary>NCCS of the kernel's struct termios; sizeof(struct termios) is 4 flags, c_line and c_cc.</summary>
    public const int Nccs = 19, TermiosSize = 4 * 4 + 1 + Nccs, WinsizeSize = 8;

    // c_oflag, c_lflag bits (asm-generic/termbits.h) that decide what re-queued bytes would do.
    public const uint OPOST = 0x1, ECHO = 0x8, ECHOE = 0x10, ECHOK = 0x20, ECHONL = 0x40, ECHOCTL = 0x200, ECHOKE = 0x800;

    /// <summary>
    /// The slave index of a Unix98 pty: majors 136..143 (UNIX98_PTY_SLAVE_MAJOR and its count),
    /// 256 minors each; the ptmx master is 5:2 (TTYAUX_MAJOR), other masters 128..135.
    /// </summary>
    public static (TtyKind Kind, int Index) Classify(ulong rdev)
    {
        uint major = Major(rdev), minor = Minor(rdev);
        return major switch
        {
            5 when minor == 0 => (TtyKind.CurrentTty, -1),
            5 when minor == 1 => (TtyKind.Console, -1),
            5 when minor == 2 => (TtyKind.PtyMaster, -1),
            >= 128 and <= 135 => (TtyKind.PtyMaster, -1),
            >= 136 and <= 143 => (TtyKind.PtySlave, (int)((major - 136) * 256 + minor)),
            4 when minor < 64 => (TtyKind.VirtualConsole, -1),
            4 => (TtyKind.Serial, -1),
            188 or 204 => (TtyKind.Serial, -1),   // USB_SERIAL_MAJOR, LOW_DENSE_SERIAL_MAJOR
            _ => (TtyKind.None, -1),
        };
    }

    public static uint Major(ulong rdev) => (uint)(((rdev >> 8) & 0xfff) | ((rdev >> 32) & ~0xfffUL));
    public static uint Minor(ulong rdev) => (uint)((rdev & 0xff) | ((rdev >> 12) & ~0xffUL));

    /// <summary>The device number of slave <paramref name="index"/> as stat shows it (new_encode_dev).</summary>
    public static ulong SlaveRdev(int index)
    {
        ulong major = 136 + (ulong)index / 256, minor = (ulong)index % 256;
        return (minor & 0xff) | (major << 8) | ((minor & ~0xffUL) << 12);
    }

    /// <summary>A /proc/PID/stat tty_nr (the controlling terminal) as a stat st_rdev: both are new_encode_dev.</summary>
    public static ulong RdevOfTtyNr(int ttyNr) => (uint)ttyNr;

    /// <summary>struct termios as TCGETS fills it.</summary>
    public readonly record struct Termios(uint Iflag, uint Oflag, uint Cflag, uint Lflag, byte Line, byte[] Cc)
    {
        public static Termios Parse(ReadOnlySpan<byte> raw)
        {
            if (raw.Length < TermiosSize) throw new ArgumentException($"struct termios is {TermiosSize} bytes, got {raw.Length}");
            return new Termios(BinaryPrimitives.ReadUInt32LittleEndian(raw), BinaryPrimitives.ReadUInt32LittleEndian(raw[4..]),
                BinaryPrimitives.ReadUInt32LittleEndian(raw[8..]), BinaryPrimitives.ReadUInt32LittleEndian(raw[12..]),
                raw[16], raw.Slice(17, Nccs).ToArray());
        }

        public byte[] ToBytes()
        {
            if (Cc.Length < Nccs) throw new ArgumentException($"termios c_cc has {Cc.Length} entries, the kernel's {Nccs}");
            var raw = new byte[TermiosSize];
            BinaryPrimitives.WriteUInt32LittleEndian(raw, Iflag);
            BinaryPrimitives.WriteUInt32LittleEndian(raw.AsSpan(4), Oflag);
            BinaryPrimitives.WriteUInt32LittleEndian(raw.AsSpan(8), Cflag);
            BinaryPrimitives.WriteUInt32LittleEndian(raw.AsSpan(12), Lflag);
            raw[16] = Line;
            Cc.AsSpan(0, Nccs).CopyTo(raw.AsSpan(17));
            return raw;
        }

        /// <summary>This termios without echo: bytes put back into the input queue were echoed once already.</summary>
        public Termios WithoutEcho() => this with { Lflag = Lflag & ~(ECHO | ECHOE | ECHOK | ECHONL | ECHOCTL | ECHOKE) };
    }

    /// <summary>struct winsize: rows, columns, x and y pixels (four u16).</summary>
    public readonly record struct Winsize(ushort Row, ushort Col, ushort Xpixel, ushort Ypixel)
    {
        public static Winsize Parse(ReadOnlySpan<byte> raw) => new(BinaryPrimitives.ReadUInt16LittleEndian(raw),
            BinaryPrimitives.ReadUInt16LittleEndian(raw[2..]), BinaryPrimitives.ReadUInt16LittleEndian(raw[4..]),
            BinaryPrimitives.ReadUInt16LittleEndian(raw[6..]));

        public byte[] ToBytes()
        {
            var raw = new byte[WinsizeSize];
            BinaryPrimitives.WriteUInt16LittleEndian(raw, Row);
            BinaryPrimitives.WriteUInt16LittleEndian(raw.AsSpan(2), Col);
            BinaryPrimitives.WriteUInt16LittleEndian(raw.AsSpan(4), Xpixel);
            BinaryPrimitives.WriteUInt16LittleEndian(raw.AsSpan(6), Ypixel);
            return raw;
        }
    }

    /// <summary>
    /// The data of one read(2) of a pty master in packet mode (TIOCPKT): the first byte is
    /// TIOCPKT_DATA (0) before data, or a status byte alone (flow control, flushes), which carries no data.
    /// </summary>
    public static ReadOnlySpan<byte> PacketData(ReadOnlySpan<byte> read) =>
        read.Length == 0 || read[0] != 0 ? ReadOnlySpan<byte>.Empty : read[1..];

    /// <summary>The index N in a slave's path /dev/pts/N (or any …/pts/N), or -1.</summary>
    public static int PtsIndex(string path)
    {
        int slash = path.LastIndexOf('/');
        if (slash < 4 || !path.AsSpan(0, slash).EndsWith("/pts")) return -1;
        return int.TryParse(path.AsSpan(slash + 1), System.Globalization.NumberStyles.None, null, out int n) ? n : -1;
    }
}
