using System.Buffers.Binary;
using Google.Protobuf;

namespace Crisp.Images;

/// <summary>
/// Reads one CRIU image file: magic(s), then records of <c>u32 length</c>
/// (little-endian) + protobuf message, some followed by raw payload bytes
/// (pipes-data). The whole file is read up front (these images are small; page
/// data lives in pages-N.img, which is not read through this type). Every
/// inconsistency becomes an <see cref="ImageException"/> naming the file.
/// </summary>
public sealed class ImageReader
{
    /// <summary>No single record in an image is anywhere near this; a larger length means corruption.</summary>
    public const int MaxRecordLength = 64 << 20;

    /// <summary>
    /// The largest image file read whole (pipes-data.img, with every pipe's buffered bytes, is
    /// the largest kind): a larger one is refused before anything is allocated for it.
    /// </summary>
    public const long MaxFileLength = 256L << 20;

    private readonly byte[] _data;
    private int _offset;
    private int _record;

    private ImageReader(string path, byte[] data, uint magic, int offset)
    {
        Path = path;
        _data = data;
        Magic = magic;
        _offset = offset;
    }

    public string Path { get; }

    /// <summary>The image's own magic (the second one where a common prefix is present).</summary>
    public uint Magic { get; }

    public bool AtEnd => _offset >= _data.Length;

    /// <summary>Opens <paramref name="path"/> and checks that it is an image of kind <paramref name="expectedMagic"/>.</summary>
    public static ImageReader Open(string path, uint expectedMagic)
    {
        var reader = Open(path);
        if (reader.Magic != expectedMagic)
            throw new ImageException(path,
                $"is a {ImageMagic.NameOf(reader.Magic)} image, expected {ImageMagic.NameOf(expectedMagic)}");
        return reader;
    }

    /// <summary>Opens any protobuf image file and reads its magic.</summary>
    public static ImageReader Open(string path)
    {
        byte[] data;
        try
        {
            long length = new FileInfo(path).Length;
            if (length > MaxFileLength)
                throw new ImageException(path, $"corrupt: {length} bytes, more than any image of this kind holds (limit {MaxFileLength})");
            data = File.ReadAllBytes(path);
        }
        catch (FileNotFoundException e)
        {
            throw new ImageException(path, "no such image file", e);
        }
        catch (IOException e)
        {
            throw new ImageException(path, $"cannot read: {e.Message}", e);
        }
        catch (UnauthorizedAccessException e)
        {
            throw new ImageException(path, $"cannot read: {e.Message}", e);
        }
        return FromBytes(path, data);
    }

    /// <summary>Parses an image already in memory; <paramref name="name"/> is used in error messages.</summary>
    public static ImageReader FromBytes(string name, byte[] data)
    {
        if (data.Length < 4)
            throw new ImageException(name, $"truncated: {data.Length} bytes, too short for a magic number");
        uint first = BinaryPrimitives.ReadUInt32LittleEndian(data);
        if (first is ImageMagic.Common or ImageMagic.Service)
        {
            if (data.Length < 8)
                throw new ImageException(name, "truncated: the common magic is not followed by the image's own magic");
            return new ImageReader(name, data, BinaryPrimitives.ReadUInt32LittleEndian(data.AsSpan(4)), 8);
        }
        if (first == ImageMagic.Inventory)
            return new ImageReader(name, data, first, 4);
        throw new ImageException(name, $"not a CRIU image: unknown magic 0x{first:x8}");
    }

    /// <summary>The next record's message bytes, or false at a clean end of file.</summary>
    public bool TryReadRecord(out ReadOnlySpan<byte> message)
    {
        message = default;
        if (AtEnd)
            return false;
        int left = _data.Length - _offset;
        if (left < 4)
            throw new ImageException(Path,
                $"truncated: record {_record} at offset {_offset} has only {left} of the 4 length bytes");
        uint length = BinaryPrimitives.ReadUInt32LittleEndian(_data.AsSpan(_offset));
        if (length > MaxRecordLength)
            throw new ImageException(Path,
                $"corrupt: record {_record} at offset {_offset} claims {length} bytes (limit {MaxRecordLength})");
        if (length > left - 4)
            throw new ImageException(Path,
                $"truncated: record {_record} at offset {_offset} claims {length} bytes but only {left - 4} remain");
        message = _data.AsSpan(_offset + 4, (int)length);
        _offset += 4 + (int)length;
        _record++;
        return true;
    }

    /// <summary>Reads the next record as <typeparamref name="T"/>, or returns false at the end of the file.</summary>
    public bool TryRead<T>(MessageParser<T> parser, out T message) where T : IMessage<T>
    {
        int at = _offset, index = _record;
        if (!TryReadRecord(out var bytes))
        {
            message = default!;
            return false;
        }
        try
        {
            message = parser.ParseFrom(bytes);
        }
        catch (InvalidProtocolBufferException e)
        {
            throw new ImageException(Path,
                $"corrupt: record {index} at offset {at} is not a valid {typeof(T).Name}: {e.Message}", e);
        }
        // proto2's required fields: CRIU and crit refuse a record without one, and so does crisp
        // (the parser alone would hand out zeros for them).
        if (RequiredFields.FirstMissing<T>(bytes) is { } missing)
            throw new ImageException(Path, $"corrupt: record {index} at offset {at}, a {typeof(T).Name}, lacks required field {missing}");
        return true;
    }

    /// <summary>Reads the next record, which must exist.</summary>
    public T Read<T>(MessageParser<T> parser) where T : IMessage<T>
    {
        if (!TryRead(parser, out var message))
            throw new ImageException(Path, $"truncated: expected a {typeof(T).Name} record at offset {_offset}, found the end of the file");
        return message;
    }

    /// <summary>Reads every remaining record.</summary>
    public List<T> ReadAll<T>(MessageParser<T> parser) where T : IMessage<T>
    {
        var list = new List<T>();
        while (TryRead(parser, out var m))
            list.Add(m);
        return list;
    }

    /// <summary>Raw bytes that follow a record (pipe contents in pipes-data.img).</summary>
    public ReadOnlySpan<byte> ReadPayload(uint length)
    {
        int left = _data.Length - _offset;
        if (length > left)
            throw new ImageException(Path,
                $"truncated: payload of {length} bytes at offset {_offset}, only {left} remain");
        var span = _data.AsSpan(_offset, (int)length);
        _offset += (int)length;
        return span;
    }

    /// <summary>Every byte left after the records read so far (a ghost file's raw contents).</summary>
    public ReadOnlySpan<byte> ReadRest()
    {
        var span = _data.AsSpan(_offset);
        _offset = _data.Length;
        return span;
    }

    /// <summary>Reads an image that must hold exactly one record.</summary>
    public static T ReadSingle<T>(string path, uint magic, MessageParser<T> parser) where T : IMessage<T>
    {
        var reader = Open(path, magic);
        var message = reader.Read(parser);
        if (!reader.AtEnd)
            throw new ImageException(path, $"expected one {typeof(T).Name} record, found more data at offset {reader._offset}");
        return message;
    }

    /// <summary>Reads every record of an image.</summary>
    public static List<T> ReadAll<T>(string path, uint magic, MessageParser<T> parser) where T : IMessage<T>
        => Open(path, magic).ReadAll(parser);
}
