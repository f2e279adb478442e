using System.Buffers.Binary;
using System.Collections.Concurrent;
using Crisp.Images;
using Crisp.PageServer.Protocol;
using Crisp.PageServer.Server;

namespace Crisp.PageServer.Tests;

/// <summary>Keeps received pagemaps in memory: entries in order and the page bytes.</summary>
internal sealed class MemoryPagemapSink : IPagemapSink
{
    public ConcurrentDictionary<(PagemapKind, ulong), MemoryPagemap> Committed { get; } = new();
    public ConcurrentBag<MemoryPagemap> Discarded { get; } = new();
    public bool FailWrites { get; set; }

    public IPagemapWriter Open(PagemapKind kind, ulong id) => new MemoryPagemap(this, kind, id);

    internal sealed class MemoryPagemap(MemoryPagemapSink sink, PagemapKind kind, ulong id) : IPagemapWriter
    {
        private bool _committed;
        public bool Disposed { get; private set; }
        public List<(ulong Vaddr, ulong NrPages, PagemapFlags Flags)> Entries { get; } = new();
        public MemoryStream Pages { get; } = new();

        public void Add(ulong vaddr, ulong nrPages, PagemapFlags flags) => Entries.Add((vaddr, nrPages, flags));
        public void WritePages(ReadOnlySpan<byte> bytes)
        {
            if (sink.FailWrites) throw new IOException("No space left on device");
            Pages.Write(bytes);
        }

        public void Commit()
        {
            if (_committed) return;
            _committed = true;
            sink.Committed[(kind, id)] = this;
        }

        public void Dispose()
        {
            Disposed = true;
            if (!_committed) sink.Discarded.Add(this);
        }
    }
}

/// <summary>
/// Pages computed from (pid, vaddr): every page starts with its vaddr and pid, the rest is a fixed
/// pattern, so any amount can be served and checked without storing it.
/// </summary>
internal sealed class PatternPageSource : IPageSource
{
    private static readonly byte[] Filler = MakeFiller();

    /// <summary>Called with the bytes about to be produced; tests use it to slow down or block the source.</summary>
    public Action<int>? BeforeRead { get; init; }

    public long BytesServed => Interlocked.Read(ref _served);
    private long _served;

    public IPageChannel OpenChannel() => new Channel(this);
    public void Dispose() { }

    public static void Fill(int pid, ulong vaddr, Span<byte> destination)
    {
        for (int off = 0; off < destination.Length; off += 4096)
        {
            var page = destination.Slice(off, 4096);
            Filler.CopyTo(page);
            BinaryPrimitives.WriteUInt64LittleEndian(page, vaddr + (ulong)off);
            BinaryPrimitives.WriteInt32LittleEndian(page[8..], pid);
        }
    }

    /// <summary>Index of the first page that is not what <see cref="Fill"/> makes, or -1.</summary>
    public static int FirstBadPage(int pid, ulong vaddr, ReadOnlySpan<byte> data)
    {
        for (int off = 0; off < data.Length; off += 4096)
        {
            var page = data.Slice(off, 4096);
            if (BinaryPrimitives.ReadUInt64LittleEndian(page) != vaddr + (ulong)off
                || BinaryPrimitives.ReadInt32LittleEndian(page[8..]) != pid
                || !page[12..].SequenceEqual(Filler.AsSpan(12)))
                return off / 4096;
        }
        return -1;
    }

    private static byte[] MakeFiller()
    {
        var b = new byte[4096];
        for (int i = 0; i < b.Length; i++) b[i] = (byte)(i * 7 + 3);
        return b;
    }

    private sealed class Channel(PatternPageSource owner) : IPageChannel
    {
        public void Read(int pid, ulong vaddr, Span<byte> destination)
        {
            owner.BeforeRead?.Invoke(destination.Length);
            Fill(pid, vaddr, destination);
            Interlocked.Add(ref owner._served, destination.Length);
        }

        public void Dispose() { }
    }
}
