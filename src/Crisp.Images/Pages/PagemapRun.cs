namespace Crisp.Images.Pages;

/// <summary>
/// One pagemap entry: <see cref="NrPages"/> pages from <see cref="Vaddr"/>.
/// For present runs <see cref="FileOffset"/> is where their bytes start in
/// pages-N.img; for runs without data (lazy holes, parent) it is -1.
/// </summary>
public readonly record struct PagemapRun(ulong Vaddr, ulong NrPages, PagemapFlags Flags, long FileOffset)
{
    public const int PageSize = 4096;

    public ulong End => Vaddr + NrPages * PageSize;
    public ulong Length => NrPages * PageSize;
    public bool IsPresent => (Flags & PagemapFlags.Present) != 0;
    public bool IsLazy => (Flags & PagemapFlags.Lazy) != 0;
    public bool Contains(ulong address) => address >= Vaddr && address < End;
    /// <summary>The pages this entry covers.</summary>
    public PageRange Range => new(Vaddr, NrPages);
}
