using Crisp.Images;
using Crisp.Images.Pages;

namespace Crisp.Checkpoint.Dump;

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
