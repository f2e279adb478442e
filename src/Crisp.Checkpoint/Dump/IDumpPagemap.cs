using Crisp.Images;
using Crisp.Images.Pages;

namespace Crisp.Checkpoint.Dump;

/// <summary>One process's pagemap as it is being written: entries in rising address order.</summary>
public interface IDumpPagemap : IDisposable
{
    /// <summary>Pages with data (<paramref name="flags"/> includes Present, and Lazy for lazy-able VMAs).</summary>
    void Write(ulong vaddr, ReadOnlySpan<byte> pages, PagemapFlags flags);

    /// <summary>An entry without data: pages that a lazy dump's page server delivers later (PE_LAZY only).</summary>
    void WriteLazy(ulong vaddr, ulong nrPages);

    /// <summary>An entry without data whose pages are in the parent images (PE_PARENT, an incremental dump).</summary>
    void WriteParent(ulong vaddr, ulong nrPages) =>
        throw new NotSupportedException("this page sink cannot write pages that are in the parent images");

    /// <summary>This pagemap is complete; disposing without completing means the dump failed.</summary>
    void Complete();
}
