namespace Crisp.LazyPages;

/// <summary>A pagemap run: <see cref="NrPages"/> pages at <see cref="Vaddr"/> whose bytes are in the pages image.</summary>
public readonly record struct PageRun(ulong Vaddr, ulong NrPages)
{
    public ulong End => Vaddr + (NrPages << 12);
}
