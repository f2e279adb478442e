using System.Collections.Concurrent;
using Crisp.Images;
using Crisp.Images.Pages;
using Crisp.Images.Proto;

namespace Crisp.LazyPages;

/// <summary>
/// Pages from pages-N.img through each task's pagemap. Readers are opened on first use per pid and
/// shared by all channels (reads are pread, thread safe). Any read failure becomes a
/// <see cref="PageSourceException"/>.
/// </summary>
public sealed class ImagePageSource : IPageSource
{
    private readonly ImageDir _dir;
    private readonly ConcurrentDictionary<int, Lazy<PagemapReader>> _readers = new();

    public ImagePageSource(ImageDir dir) => _dir = dir;
    public ImagePageSource(string imagesDir) : this(new ImageDir(imagesDir)) { }

    public IPageChannel OpenChannel() => new Channel(this);

    private PagemapReader ReaderFor(int pid) =>
        _readers.GetOrAdd(pid, p => new Lazy<PagemapReader>(() => _dir.OpenPagemap(p))).Value;

    public void Dispose()
    {
        foreach (var r in _readers.Values)
            if (r.IsValueCreated) r.Value.Dispose();
        _readers.Clear();
    }

    private sealed class Channel(ImagePageSource source) : IPageChannel
    {
        public void Read(int pid, ulong vaddr, Span<byte> destination)
        {
            try
            {
                source.ReaderFor(pid).Read(vaddr, destination);
            }
            catch (Exception e) when (e is ImageException or IOException or ArgumentOutOfRangeException or ObjectDisposedException or UnauthorizedAccessException)
            {
                throw new PageSourceException($"pid {pid}: pages at 0x{vaddr:x} (+{destination.Length}) cannot be read from {source._dir.Path}: {e.Message}", e);
            }
        }

        public void Dispose() { }
    }
}
