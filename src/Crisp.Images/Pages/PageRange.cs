namespace Crisp.Images.Pages;

/// <summary>
/// <see cref="NrPages"/> pages from <see cref="Vaddr"/> (page aligned): what a pagemap entry
/// covers, without its flags and file offset (those make a <see cref="PagemapRun"/>). A lazy
/// dump's PE_LAZY runs (LazyDumpTree) and a lazy plan's data runs (LazyPlan) are these.
/// </summary>
public readonly record struct PageRange(ulong Vaddr, ulong NrPages)
{
    public const int PageSize = 4096;

    public ulong End => Vaddr + NrPages * PageSize;
    public ulong Length => NrPages * PageSize;
    public bool Contains(ulong address) => address >= Vaddr && address < End;
}
