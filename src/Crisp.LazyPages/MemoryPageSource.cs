using Crisp.Images;

namespace Crisp.LazyPages;

/// <summary>
/// Pages held in memory (or computed): for tests and for sources that already have the bytes.
/// <see cref="Fill"/> is called with (pid, vaddr, destination) and must fill the whole span or throw
/// <see cref="PageSourceException"/>. It may be called from two threads at once (fault and prefetch channels).
/// </summary>
public sealed class MemoryPageSource : IPageSource
{
    public delegate void FillPages(int pid, ulong vaddr, Span<byte> destination);

    private readonly FillPages _fill;
    private long _reads, _bytes;

    public MemoryPageSource(FillPages fill) => _fill = fill;

    /// <summary>Serves <paramref name="pages"/> as the contents of pid's memory starting at <paramref name="vaddr"/>.</summary>
    public static MemoryPageSource FromBytes(int pid, ulong vaddr, byte[] pages) => new((p, a, dst) =>
    {
        if (p != pid || a < vaddr || a - vaddr + (ulong)dst.Length > (ulong)pages.LongLength)
            throw new PageSourceException($"no pages for pid {p} at {a:x} (+{dst.Length})");
        pages.AsSpan((int)(a - vaddr), dst.Length).CopyTo(dst);
    });

    public long Reads => Interlocked.Read(ref _reads);
    public long BytesRead => Interlocked.Read(ref _bytes);

    public IPageChannel OpenChannel() => new Channel(this);
    public void Dispose() { }

    private sealed class Channel(MemoryPageSource source) : IPageChannel
    {
        public void Read(int pid, ulong vaddr, Span<byte> destination)
        {
            if (destination.Length % 4096 != 0) throw new ArgumentException("not a whole number of pages", nameof(destination));
            source._fill(pid, vaddr, destination);
            Interlocked.Increment(ref source._reads);
            Interlocked.Add(ref source._bytes, destination.Length);
        }

        public void Dispose() { }
    }
}
