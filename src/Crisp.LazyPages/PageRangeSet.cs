namespace Crisp.LazyPages;

/// <summary>
/// Sorted, non-overlapping set of <see cref="PendingRange"/>s. Not thread safe: the owner
/// (<see cref="LazyProcess"/>) guards it with its lock. Adjacent ranges are merged only when their
/// image addresses are contiguous too, so every range maps onto one contiguous image run.
/// </summary>
public sealed class PageRangeSet
{
    private readonly List<PendingRange> _ranges = new();

    public PageRangeSet() { }
    public PageRangeSet(IEnumerable<PendingRange> ranges) { foreach (var r in ranges) Add(r); }

    public int Count => _ranges.Count;
    public bool IsEmpty => _ranges.Count == 0;
    public IReadOnlyList<PendingRange> Ranges => _ranges;
    public long Pages { get { long n = 0; foreach (var r in _ranges) n += r.Pages; return n; } }

    public PageRangeSet Clone() { var c = new PageRangeSet(); c._ranges.AddRange(_ranges); return c; }

    /// <summary>Index of the first range whose End is above <paramref name="address"/>.</summary>
    private int LowerBound(ulong address)
    {
        int lo = 0, hi = _ranges.Count;
        while (lo < hi)
        {
            int mid = (lo + hi) >>> 1;
            if (_ranges[mid].End <= address) lo = mid + 1; else hi = mid;
        }
        return lo;
    }

    public bool TryFind(ulong address, out PendingRange range)
    {
        int i = LowerBound(address);
        if (i < _ranges.Count && _ranges[i].Start <= address) { range = _ranges[i]; return true; }
        range = default;
        return false;
    }

    /// <summary>The first range that ends above <paramref name="address"/> (wrapping to the first one).</summary>
    public PendingRange? FirstAtOrAfter(ulong address)
    {
        if (_ranges.Count == 0) return null;
        int i = LowerBound(address);
        return _ranges[i < _ranges.Count ? i : 0];
    }

    /// <summary>Lowest address of a range starting at or above <paramref name="address"/>, or ulong.MaxValue.</summary>
    public ulong NextStartAtOrAfter(ulong address)
    {
        int i = LowerBound(address);
        if (i < _ranges.Count) return Math.Max(_ranges[i].Start, address);
        return ulong.MaxValue;
    }

    public void Add(PendingRange r)
    {
        if (r.Start >= r.End) return;
        int i = LowerBound(r.Start);
        if (i < _ranges.Count && _ranges[i].Start < r.End)
            throw new InvalidOperationException($"pending range {r} overlaps {_ranges[i]}");
        // merge with neighbours when both addresses and image addresses continue
        if (i > 0 && _ranges[i - 1].End == r.Start && _ranges[i - 1].ImageAddressOf(r.Start) == r.ImageStart)
        {
            var prev = _ranges[i - 1];
            r = new PendingRange(prev.Start, r.End, prev.ImageStart);
            _ranges.RemoveAt(--i);
        }
        if (i < _ranges.Count && _ranges[i].Start == r.End && r.ImageAddressOf(r.End) == _ranges[i].ImageStart)
        {
            r = new PendingRange(r.Start, _ranges[i].End, r.ImageStart);
            _ranges.RemoveAt(i);
        }
        _ranges.Insert(i, r);
    }

    /// <summary>Removes [start, end) and returns the pieces that were in the set, in order.</summary>
    public List<PendingRange> Remove(ulong start, ulong end)
    {
        var taken = new List<PendingRange>();
        if (start >= end) return taken;
        int i = LowerBound(start);
        while (i < _ranges.Count && _ranges[i].Start < end)
        {
            var r = _ranges[i];
            var mid = r.Clip(start, end)!.Value;
            taken.Add(mid);
            _ranges.RemoveAt(i);
            if (r.Start < mid.Start) { _ranges.Insert(i, new PendingRange(r.Start, mid.Start, r.ImageStart)); i++; }
            if (mid.End < r.End) { _ranges.Insert(i, new PendingRange(mid.End, r.End, r.ImageAddressOf(mid.End))); i++; }
        }
        return taken;
    }

    /// <summary>UFFD_EVENT_REMAP: what was at [from, from+len) is now at [to, to+len); its image addresses stay.</summary>
    public void Remap(ulong from, ulong to, ulong len)
    {
        var moved = Remove(from, from + len);
        // the destination was unmapped by mremap (an UNMAP event covers it too); drop anything stale there
        Remove(to, to + len);
        foreach (var r in moved) Add(new PendingRange(r.Start - from + to, r.End - from + to, r.ImageStart));
    }

    public void Clear() => _ranges.Clear();
}
