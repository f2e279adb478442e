using System.Buffers.Binary;
using System.Net.Sockets;
using System.Text;
using Crisp.PageServer.Transport;

namespace Crisp.Migration;

/// <summary>
/// The control connection of <c>crisp migrate</c> ↔ <c>crisp agent</c>: a tiny framing of our own.
/// Every message is one type byte, then its fields (little-endian integers, strings as u16 length + UTF-8):
/// <code>
///   source → agent   'F' name:str  length:u64  bytes      one image file
///                    'S' port:u16  address:str  key:str    start: restore lazily, pages from this page server
///                                                          (empty address: the source's address on this connection;
///                                                          key: hex access key the page connections must send first)
///                    'D' name:str  parent:str              pre-copy: the files that follow go to the images dir
///                                                          `name`, whose parent images are `parent` (empty: none)
///                    'G'                                   pre-copy: restore eagerly from the last images dir
///                    'A' address:str                       before 'S'/'G': add ADDR/PREFIX on the agent's
///                                                          --move-address-dev before the restore (Addresses/)
///   agent → source   'R' pid:i32   restore_us:i64          the process runs on the destination
///                    'E' message:str                       the destination failed (before 'R': nothing ran)
///                    'C' rc:i32    stats:str               the lazy-pages daemon finished (rc 0: every page went in)
/// </code>
/// The connection was authenticated before the first message (<see cref="PageServerTransport"/>:
/// TLS with client certificates, and/or the agent's pre-shared token).
/// </summary>
public sealed class MigrationWire(PageServerConnection connection) : IDisposable
{
    public const byte File = (byte)'F', Start = (byte)'S', Running = (byte)'R', Error = (byte)'E', Complete = (byte)'C',
        Dir = (byte)'D', Go = (byte)'G', Address = (byte)'A';

    private readonly Stream _stream = connection.Stream;
    private readonly object _sendLock = new();

    public Socket Socket => connection.Socket;
    public long BytesSent { get; private set; }

    public void SendFile(string name, string path)
    {
        using var f = System.IO.File.OpenRead(path);
        lock (_sendLock)
        {
            WriteByte(File);
            WriteString(name);
            WriteU64((ulong)f.Length);
            f.CopyTo(_stream, 1 << 20);
            BytesSent += f.Length;
            _stream.Flush();
        }
    }

    public void SendStart(int port, string address, ReadOnlySpan<byte> accessKey)
    {
        string key = Convert.ToHexString(accessKey);
        lock (_sendLock) { WriteByte(Start); WriteU16((ushort)port); WriteString(address); WriteString(key); _stream.Flush(); }
    }

    public void SendDir(string name, string parent)
    {
        lock (_sendLock) { WriteByte(Dir); WriteString(name); WriteString(parent); _stream.Flush(); }
    }

    public void SendAddress(string address)
    {
        lock (_sendLock) { WriteByte(Address); WriteString(address); _stream.Flush(); }
    }

    public void SendGo()
    {
        lock (_sendLock) { WriteByte(Go); _stream.Flush(); }
    }

    public void SendRunning(int pid, TimeSpan restore)
    {
        lock (_sendLock) { WriteByte(Running); WriteI32(pid); WriteI64((long)(restore.TotalMilliseconds * 1000)); _stream.Flush(); }
    }

    public void SendError(string message)
    {
        lock (_sendLock) { WriteByte(Error); WriteString(message.Length > 4000 ? message[..4000] : message); _stream.Flush(); }
    }

    public void SendComplete(int rc, string stats)
    {
        lock (_sendLock) { WriteByte(Complete); WriteI32(rc); WriteString(stats.Length > 60000 ? "" : stats); _stream.Flush(); }
    }

    /// <summary>The next message's type, or -1 on a clean end of stream.</summary>
    public int ReadType()
    {
        int b = _stream.ReadByte();
        return b;
    }

    /// <summary>A string (at most 64 KiB: its length is a u16).</summary>
    public string ReadString() => ReadString(ushort.MaxValue);

    public ushort ReadU16() { Span<byte> b = stackalloc byte[2]; _stream.ReadExactly(b); return BinaryPrimitives.ReadUInt16LittleEndian(b); }
    public int ReadI32() { Span<byte> b = stackalloc byte[4]; _stream.ReadExactly(b); return BinaryPrimitives.ReadInt32LittleEndian(b); }
    public long ReadI64() { Span<byte> b = stackalloc byte[8]; _stream.ReadExactly(b); return BinaryPrimitives.ReadInt64LittleEndian(b); }
    public ulong ReadU64() { Span<byte> b = stackalloc byte[8]; _stream.ReadExactly(b); return BinaryPrimitives.ReadUInt64LittleEndian(b); }

    /// <summary>A string of at most <paramref name="maxBytes"/> UTF-8 bytes; longer is refused before anything is allocated.</summary>
    public string ReadString(int maxBytes)
    {
        Span<byte> len = stackalloc byte[2];
        _stream.ReadExactly(len);
        int n = BinaryPrimitives.ReadUInt16LittleEndian(len);
        if (n > maxBytes) throw new IOException($"refusing a string of {n} bytes (at most {maxBytes})");
        var bytes = new byte[n];
        _stream.ReadExactly(bytes);
        return Encoding.UTF8.GetString(bytes);
    }

    /// <summary>
    /// Reads a file message's body (after its type byte) into <paramref name="dir"/>; returns its
    /// name and length. The name and the length are checked against <paramref name="limits"/> and
    /// <paramref name="bytesLeft"/> (what the migration may still store) before a byte is written.
    /// </summary>
    public (string Name, long Length) ReceiveFile(string dir, MigrationLimits limits, long bytesLeft)
    {
        string name = ReadString(limits.MaxNameLength);
        if (!MigrationLimits.IsImageName(name))
            throw new IOException($"refusing image file name '{name}'");
        ulong length = ReadU64();
        if (length > (ulong)Math.Max(0, bytesLeft))
            throw new IOException($"refusing {name}: {length} bytes, more than the {Math.Max(0, bytesLeft)} this migration may still store (at most {limits.MaxTotalBytes} in all)");
        using var f = new FileStream(Path.Combine(dir, name), FileMode.CreateNew, FileAccess.Write);
        var buffer = new byte[(int)Math.Min(1UL << 20, Math.Max(length, 1))];
        ulong left = length;
        while (left > 0)
        {
            int n = _stream.Read(buffer, 0, (int)Math.Min((ulong)buffer.Length, left));
            if (n == 0) throw new EndOfStreamException($"connection closed in the middle of {name}");
            f.Write(buffer, 0, n);
            left -= (ulong)n;
        }
        return (name, (long)length);
    }

    private void WriteByte(byte b) { _stream.WriteByte(b); BytesSent++; }
    private void WriteU16(ushort v) { Span<byte> b = stackalloc byte[2]; BinaryPrimitives.WriteUInt16LittleEndian(b, v); _stream.Write(b); BytesSent += 2; }
    private void WriteI32(int v) { Span<byte> b = stackalloc byte[4]; BinaryPrimitives.WriteInt32LittleEndian(b, v); _stream.Write(b); BytesSent += 4; }
    private void WriteI64(long v) { Span<byte> b = stackalloc byte[8]; BinaryPrimitives.WriteInt64LittleEndian(b, v); _stream.Write(b); BytesSent += 8; }
    private void WriteU64(ulong v) { Span<byte> b = stackalloc byte[8]; BinaryPrimitives.WriteUInt64LittleEndian(b, v); _stream.Write(b); BytesSent += 8; }

    private void WriteString(string s)
    {
        var bytes = Encoding.UTF8.GetBytes(s);
        WriteU16(checked((ushort)bytes.Length));
        _stream.Write(bytes);
        BytesSent += bytes.Length;
    }

    public void Dispose()
    {
        connection.ShutdownTls();
        connection.Dispose();
    }
}
