using Crisp.Images;
using Crisp.Images.Pages;

namespace Crisp.Checkpoint.Dump;

/// <summary>
/// Where a dump's pages go: local images (<see cref="ImageDirPageSink"/>, pagemap-PID.img and
/// pages-N.img next to the other images) or a page server (CRIU's <c>dump --page-server</c>; the
/// adapter lives with the sockets in Crisp.Cli, since Crisp.Checkpoint knows no sockets).
/// One pagemap is open at a time; pagemaps are written one after the other, in pid order of the tree.
/// </summary>
public interface IDumpPageSink
{
    /// <summary>Starts the pagemap of process <paramref name="pid"/>.</summary>
    IDumpPagemap Open(int pid);

    /// <summary>Every pagemap was written: make them durable (a page server acknowledges CLOSE). Called before inventory.img.</summary>
    void Finish();
}

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

/// <summary>The usual sink: pagemap-PID.img and pages-N.img in the images directory.</summary>
public sealed class ImageDirPageSink(ImageDir dir) : IDumpPageSink
{
    public IDumpPagemap Open(int pid) => new LocalPagemap(dir.CreatePagemap(pid));

    public void Finish() { }

    private sealed class LocalPagemap(PagemapWriter writer) : IDumpPagemap
    {
        public void Write(ulong vaddr, ReadOnlySpan<byte> pages, PagemapFlags flags) => writer.Write(vaddr, pages, flags);
        public void WriteLazy(ulong vaddr, ulong nrPages) => writer.WriteHole(vaddr, nrPages, PagemapFlags.Lazy);
        public void WriteParent(ulong vaddr, ulong nrPages) => writer.WriteHole(vaddr, nrPages, PagemapFlags.Parent);
        public void Complete() => writer.Complete();
        public void Dispose() => writer.Dispose();
    }
}
