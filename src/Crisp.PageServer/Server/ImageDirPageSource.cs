using System.Collections.Concurrent;
using Crisp.Images;
using Crisp.Images.Pages;

namespace Crisp.PageServer.Server;

/// <summary>
/// Lazy mode from a local dump: pages served from pagemap-PID.img + pages-N.img, each pagemap
/// opened on the first request for its pid and then shared by every channel (reads are pread,
/// thread-safe). Serves any number of clients and restores in a row.
/// </summary>
public sealed class ImageDirPageSource : IPageSource
{
    private readonly ImageDir _dir;
    private readonly ConcurrentDictionary<int, Lazy<PagemapReader>> _readers = new();

    public ImageDirPageSource(ImageDir dir) => _dir = dir;

    public IPageChannel OpenChannel() => new Channel(this);

    public void Dispose()
    {
        foreach (var r in _readers.Values)
            if (r.IsValueCreated) r.Value.Dispose();
        _readers.Clear();
    }

    private PagemapReader ReaderFor(int pid)
    {
        var lazy = _readers.GetOrAdd(pid, p => new Lazy<PagemapReader>(() => _dir.OpenPagemap(p)));
        try
        {
            return lazy.Value;
        }
        catch (Exception e) when (e is ImageException or IOException or UnauthorizedAccessException)
        {
            _readers.TryRemove(pid, out _); // maybe the dump is not finished yet: try again next time
            throw new PageSourceException($"no pages for pid {pid} in {_dir.Path}: {e.Message}", e);
        }
    }

    private sealed class Channel(ImageDirPageSource owner) : IPageChannel
    {
        public void Read(int pid, ulong vaddr, Span<byte> destination)
        {
            var reader = owner.ReaderFor(pid);
            try
            {
                reader.Read(vaddr, destination);
            }
            catch (Exception e) when (e is ArgumentOutOfRangeException or ImageException)
            {
                throw new PageSourceException($"pid {pid}: pages 0x{vaddr:x}+{destination.Length}: {e.Message}", e);
            }
        }

        public void Dispose() { }
    }
}
