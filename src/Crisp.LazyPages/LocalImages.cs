using System.Collections.Concurrent;
using Crisp.Images;
using Crisp.Images.Pages;
using Crisp.Images.Proto;

namespace Crisp.LazyPages;

/// <summary>Lazy plans and pages read from a local images directory (mm-PID.img, pagemap-PID.img, pages-N.img).</summary>
public static class LocalImages
{
    /// <summary>
    /// The plan from an mm entry and pagemap runs: every present run inside a lazy VMA is data to
    /// deliver, whether or not it carries PE_LAZY (if restore already filled it, the copy meets
    /// EEXIST and is counted, which is harmless; leaving it out could mean zeros).
    /// Runs whose pages live in a parent image (pre-dump) come resolved by PagemapReader; an
    /// unresolved one (a plan made from raw entries) is refused.
    /// </summary>
    public static LazyPlan Plan(int pid, MmEntry mm, IEnumerable<PagemapRun> runs)
    {
        var vmas = mm.Vmas.Where(LazyVmas.IsLazy).Select(v => new LazyVma(v.Start, v.End)).ToList();
        var data = new List<PageRun>();
        foreach (var r in runs)
        {
            bool inLazy = vmas.Any(v => v.Start < r.End && r.Vaddr < v.End);
            if (!inLazy) continue;
            if ((r.Flags & PagemapFlags.Parent) != 0 && !r.IsPresent)
                throw new ImageException($"pagemap-{pid}.img", $"pages at 0x{r.Vaddr:x} are in a parent image (pre-dump); lazy-pages cannot serve them yet");
            // PE_LAZY without PE_PRESENT (a lazy dump, CRIU's too): the bytes are at the page server.
            if (r.IsPresent || r.IsLazy) data.Add(new PageRun(r.Vaddr, r.NrPages));
        }
        return new LazyPlan(pid, vmas, data);
    }

    /// <summary>Reads mm-PID.img and pagemap-PID.img from <paramref name="dir"/>.</summary>
    public static LazyPlan Plan(ImageDir dir, int pid)
    {
        var mm = dir.ReadMm(pid);
        using var pagemap = dir.OpenPagemap(pid);
        return Plan(pid, mm, pagemap.Runs);
    }
}

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
