using Crisp.Images.Proto;
using Google.Protobuf;

namespace Crisp.Images.Tests;

/// <summary>Reads and writes any image kind the schemas cover, record by record, for round trips.</summary>
internal static class AnyImage
{
    public static (uint Magic, List<IMessage> Records) Read(string path)
    {
        var reader = ImageReader.Open(path);
        var records = new List<IMessage>();
        switch (reader.Magic)
        {
            case ImageMagic.Pagemap:
                records.Add(reader.Read(PagemapHead.Parser));
                records.AddRange(reader.ReadAll(PagemapEntry.Parser));
                break;
            default:
                var parser = ParserFor(reader.Magic, path);
                while (reader.TryReadRecord(out var bytes))
                    records.Add(parser.ParseFrom(bytes.ToArray()));
                break;
        }
        return (reader.Magic, records);
    }

    public static void Write(string path, uint magic, IEnumerable<IMessage> records)
    {
        using var writer = new ImageWriter(path, magic);
        foreach (var r in records)
            writer.Write(r);
    }

    private static MessageParser ParserFor(uint magic, string path) => magic switch
    {
        ImageMagic.Inventory => InventoryEntry.Parser,
        ImageMagic.Pstree => PstreeEntry.Parser,
        ImageMagic.Core => CoreEntry.Parser,
        ImageMagic.Ids => TaskKobjIdsEntry.Parser,
        ImageMagic.Mm => MmEntry.Parser,
        ImageMagic.Fs => FsEntry.Parser,
        ImageMagic.Files => FileEntry.Parser,
        ImageMagic.Fdinfo => FdinfoEntry.Parser,
        ImageMagic.Seccomp => SeccompEntry.Parser,
        ImageMagic.Timens => TimensEntry.Parser,
        _ => throw new NotSupportedException($"{path}: no schema for {ImageMagic.NameOf(magic)}"),
    };
}
