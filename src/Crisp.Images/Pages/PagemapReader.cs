using Crisp.Images.Proto;
using Microsoft.Win32.SafeHandles;

namespace Crisp.Images.Pages;

/// <summary>
/// A pagemap-PID.img with its pages-N.img opened for reading. The runs are
/// loaded and checked once (rising, not overlapping, all present data inside
/// the pages file); after that every lookup and <see cref="Read"/> is
/// lock-free and may be called from many threads at once (reads use pread).
/// </summary>
public sealed class PagemapReader : IDisposable
{
    private readonly PagemapRun[] _runs;
    private readonly ulong[] _starts;
    private readonly SafeFileHandle _pages;

    private PagemapReader(string pagemapPath, string pagesPath, uint pagesId, PagemapRun[] runs,
        SafeFileHandle pages, long pagesLength)
    {
        PagemapPath = pagemapPath;
        PagesPath = pagesPath;
        PagesId = pagesId;
        _runs = runs;
        _starts = Array.ConvertAll(runs, r => r.Vaddr);
        _pages = pages;
        PagesFileLength = pagesLength;
    }

    public string PagemapPath { get; }
    public string PagesPath { get; }
    public uint PagesId { get; }
    public long PagesFileLength { get; }

    public IReadOnlyList<PagemapRun> Runs => _runs;

    /// <summary>The pages file, for callers that move data without copying (splice, UFFDIO_COPY from a mapping).</summary>
    public SafeFileHandle PagesHandle => _pages;

    public ulong PresentPages { get; private init; }

    /// <summary>Opens <paramref name="pagemapPath"/>; the pages file is looked up in <paramref name="directory"/>.</summary>
    public static PagemapReader Open(string pagemapPath, string directory)
    {
        var reader = ImageReader.Open(pagemapPath, ImageMagic.Pagemap);
        var head = reader.Read(PagemapHead.Parser);
        var runs = new List<PagemapRun>();
        long offset = 0;
        ulong present = 0;
        while (reader.TryRead(PagemapEntry.Parser, out var e))
        {
            ulong nr = e.HasNrPages ? e.NrPages : e.CompatNrPages;
            // CRIU's reading of images older than the flags field.
            PagemapFlags flags = e.HasFlags ? (PagemapFlags)e.Flags
                : e.InParent ? PagemapFlags.Parent : PagemapFlags.Present;
            if (e.InParent)
                flags |= PagemapFlags.Parent;
            if (nr == 0)
                throw new ImageException(pagemapPath, $"entry {runs.Count} at 0x{e.Vaddr:x} has no pages");
            if (e.Vaddr % PagemapRun.PageSize != 0 || nr > (ulong.MaxValue - e.Vaddr) / PagemapRun.PageSize)
                throw new ImageException(pagemapPath, $"entry {runs.Count}: bad range 0x{e.Vaddr:x} + {nr} pages");
            if (runs.Count > 0 && e.Vaddr < runs[^1].End)
                throw new ImageException(pagemapPath,
                    $"entry {runs.Count} at 0x{e.Vaddr:x} overlaps or precedes the previous one ending at 0x{runs[^1].End:x}");
            bool isPresent = (flags & PagemapFlags.Present) != 0;
            runs.Add(new PagemapRun(e.Vaddr, nr, flags, isPresent ? offset : -1));
            if (isPresent)
            {
                if (nr > (ulong)(long.MaxValue - offset) / PagemapRun.PageSize)
                    throw new ImageException(pagemapPath, $"entry {runs.Count - 1}: page count {nr} overflows");
                offset += (long)nr * PagemapRun.PageSize;
                present += nr;
            }
        }

        string pagesPath = Path.Combine(directory, ImageDir.PagesName(head.PagesId));
        SafeFileHandle pages;
        try
        {
            pages = File.OpenHandle(pagesPath, FileMode.Open, FileAccess.Read, FileShare.Read);
        }
        catch (FileNotFoundException e)
        {
            throw new ImageException(pagesPath, $"missing (named by {Path.GetFileName(pagemapPath)})", e);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ImageException(pagesPath, $"cannot open: {e.Message}", e);
        }
        long length = RandomAccess.GetLength(pages);
        if (length < offset)
        {
            pages.Dispose();
            throw new ImageException(pagesPath,
                $"truncated: holds {length} bytes but {Path.GetFileName(pagemapPath)} needs {offset}");
        }
        return new PagemapReader(pagemapPath, pagesPath, head.PagesId, runs.ToArray(), pages, length)
        {
            PresentPages = present,
        };
    }

    /// <summary>Index of the run containing <paramref name="address"/>, or -1.</summary>
    public int IndexOf(ulong address)
    {
        int i = Array.BinarySearch(_starts, address);
        if (i < 0)
            i = ~i - 1;
        return i >= 0 && _runs[i].Contains(address) ? i : -1;
    }

    public bool TryFindRun(ulong address, out PagemapRun run)
    {
        int i = IndexOf(address);
        run = i >= 0 ? _runs[i] : default;
        return i >= 0;
    }

    /// <summary>Whether the page holding <paramref name="address"/> has its bytes in this image.</summary>
    public bool IsPresent(ulong address)
    {
        int i = IndexOf(address);
        return i >= 0 && _runs[i].IsPresent;
    }

    /// <summary>Offset in pages-N.img of the byte for <paramref name="address"/>, if present.</summary>
    public bool TryGetFileOffset(ulong address, out long offset)
    {
        int i = IndexOf(address);
        if (i < 0 || !_runs[i].IsPresent)
        {
            offset = -1;
            return false;
        }
        offset = _runs[i].FileOffset + (long)(address - _runs[i].Vaddr);
        return true;
    }

    /// <summary>
    /// Copies the image's bytes for [address, address + destination.Length)
    /// into <paramref name="destination"/>. The whole range must be present;
    /// it may cross adjacent runs. Thread-safe.
    /// </summary>
    public void Read(ulong address, Span<byte> destination)
    {
        while (!destination.IsEmpty)
        {
            int i = IndexOf(address);
            if (i < 0 || !_runs[i].IsPresent)
                throw new ArgumentOutOfRangeException(nameof(address),
                    $"0x{address:x} has no data in {Path.GetFileName(PagemapPath)}");
            var run = _runs[i];
            ulong inRun = run.End - address;
            int n = inRun < (ulong)destination.Length ? (int)inRun : destination.Length;
            ReadPagesAt(run.FileOffset + (long)(address - run.Vaddr), destination[..n]);
            destination = destination[n..];
            address += (ulong)n;
        }
    }

    /// <summary>Fills <paramref name="destination"/> from the pages file at <paramref name="offset"/> (thread safe); a short file is an image error.</summary>
    public void ReadPagesAt(long offset, Span<byte> destination)
    {
        while (!destination.IsEmpty)
        {
            int got;
            try
            {
                got = RandomAccess.Read(_pages, destination, offset);
            }
            catch (IOException e)
            {
                throw new ImageException(PagesPath, $"read at offset {offset} failed: {e.Message}", e);
            }
            if (got == 0)
                throw new ImageException(PagesPath, $"truncated: end of file at offset {offset}");
            destination = destination[got..];
            offset += got;
        }
    }

    public void Dispose() => _pages.Dispose();
}
