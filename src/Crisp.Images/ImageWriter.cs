using System.Buffers.Binary;
using Google.Protobuf;

namespace Crisp.Images;

/// <summary>
/// Writes one CRIU image file. Messages must have every proto2 <c>required</c>
/// field set: crit (and CRIU) refuse records that lack one, so the writer checks
/// before anything reaches the disk.
/// </summary>
public sealed class ImageWriter : IDisposable
{
    private readonly FileStream _stream;
    private readonly byte[] _length = new byte[4];

    /// <summary>Creates (or truncates) <paramref name="path"/> and writes the magic(s) for <paramref name="magic"/>.</summary>
    public ImageWriter(string path, uint magic)
    {
        Path = path;
        Magic = magic;
        try
        {
            _stream = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.Read, 64 << 10);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ImageException(path, $"cannot create: {e.Message}", e);
        }
        Span<byte> header = stackalloc byte[8];
        if (ImageMagic.HasCommonPrefix(magic))
        {
            BinaryPrimitives.WriteUInt32LittleEndian(header, ImageMagic.PrefixFor(magic));
            BinaryPrimitives.WriteUInt32LittleEndian(header[4..], magic);
            _stream.Write(header);
        }
        else
        {
            BinaryPrimitives.WriteUInt32LittleEndian(header, magic);
            _stream.Write(header[..4]);
        }
    }

    public string Path { get; }
    public uint Magic { get; }

    public void Write(IMessage message)
    {
        byte[] bytes = message.ToByteArray();
        if (RequiredFields.FirstMissing(message.GetType(), bytes) is { } missing)
            throw new ImageException(Path,
                $"refusing to write a {message.GetType().Name} without required field {missing} (crit would reject it)");
        BinaryPrimitives.WriteUInt32LittleEndian(_length, (uint)bytes.Length);
        _stream.Write(_length);
        _stream.Write(bytes);
    }

    /// <summary>Raw bytes after the last record (pipe contents in pipes-data.img).</summary>
    public void WritePayload(ReadOnlySpan<byte> bytes) => _stream.Write(bytes);

    public void Dispose() => _stream.Dispose();

    public static void WriteAll(string path, uint magic, IEnumerable<IMessage> messages)
    {
        using var writer = new ImageWriter(path, magic);
        foreach (var m in messages)
            writer.Write(m);
    }
}
