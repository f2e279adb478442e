namespace Crisp.LazyPages;

/// <summary>
/// A run of pages still to be filled: <see cref="Start"/>..<see cref="End"/> are run-time addresses
/// in the process (they follow mremap), <see cref="ImageStart"/> is where the same bytes were at dump
/// time, i.e. what the page source is asked for. Page aligned.
/// </summary>
public readonly record struct PendingRange(ulong Start, ulong End, ulong ImageStart)
{
    public ulong Length => End - Start;
    public long Pages => (long)(Length >> 12);
    public bool Contains(ulong address) => address >= Start && address < End;
    public ulong ImageAddressOf(ulong address) => ImageStart + (address - Start);

    /// <summary>The part of this range inside [start, end), or null.</summary>
    public PendingRange? Clip(ulong start, ulong end)
    {
        ulong s = Math.Max(start, Start), e = Math.Min(end, End);
        return s < e ? new PendingRange(s, e, ImageAddressOf(s)) : null;
    }

    public override string ToString() => $"{Start:x}-{End:x} (image {ImageStart:x})";
}
