using Crisp.Images;
using Crisp.Images.Pages;
using Crisp.PageServer.Protocol;

namespace Crisp.PageServer.Server;

/// <summary>
/// Receive mode's usual sink: pagemap-PID.img and pages-N.img in an image directory, exactly as a
/// local dump writes them (pages ids allocated 1, 2, ... by the <see cref="ImageDir"/>).
/// Safe for concurrent sessions; each pagemap belongs to one session.
/// </summary>
public sealed class ImageDirPagemapSink : IPagemapSink
{
    private readonly ImageDir _dir;

    public ImageDirPagemapSink(ImageDir dir) => _dir = dir;

    public IPagemapWriter Open(PagemapKind kind, ulong id)
    {
        if (kind != PagemapKind.Process)
            throw new PageServerProtocolException($"{kind} pagemaps (id {id}) are not supported by crisp yet");
        if (id == 0 || id > int.MaxValue)
            throw new PageServerProtocolException($"pid {id} out of range");
        return new Writer(_dir.CreatePagemap((int)id));
    }

    private sealed class Writer(PagemapWriter writer) : IPagemapWriter
    {
        private ulong _next;          // where the next bytes of the current present run go
        private PagemapFlags _flags;
        private bool _committed;

        public void Add(ulong vaddr, ulong nrPages, PagemapFlags flags)
        {
            if ((flags & PagemapFlags.Present) != 0)
            {
                // Bytes arrive in chunks; the writer merges the adjacent pieces back into one entry.
                _next = vaddr;
                _flags = flags;
            }
            else
            {
                writer.WriteHole(vaddr, nrPages, flags);
            }
        }

        public void WritePages(ReadOnlySpan<byte> bytes)
        {
            writer.Write(_next, bytes, _flags);
            _next += (ulong)bytes.Length;
        }

        public void Commit()
        {
            if (_committed) return;
            writer.Complete();
            _committed = true;
        }

        public void Dispose()
        {
            writer.Dispose();
            if (!_committed)
            {
                // No pagemap was written; the orphaned pages file must not linger either.
                try { File.Delete(writer.PagesPath); } catch (IOException) { }
            }
        }
    }
}
