using Crisp.Images.Proto;
using Microsoft.Win32.SafeHandles;

namespace Crisp.Images.Pages;

/// <summary>
/// A pagemap-PID.img with its pages-N.img opened for reading. The runs are
/// loaded and checked once (rising, not overlapping, all present data inside
/// the pages file); after that every lookup and <see cref="Read"/> is
/// lock-free and may be called from many threads at once (reads use pread).
///
/// Incremental dumps (CRIU's <c>dump --prev-images-dir</c>): entries flagged PE_PARENT have
/// their bytes in the same pagemap of the directory the images dir's <c>parent</c> symlink
/// names, which may have a parent of its own. The reader resolves them when it opens: every
/// run it shows is present (or lazy), and a run's <see cref="PagemapRun.FileOffset"/> is an
/// offset in one address space over the whole chain (this pages file first, then the parent's
/// chain after it), which <see cref="ReadPagesAt"/> takes apart again. A page in no image of
/// the chain is an image error at open.
/// </summary>
public sealed class PagemapReader : IDisposable
{
    /// <summary>CRIU's name of the link from an images directory to its parent images (CR_PARENT_LINK).</summary>
    public const string ParentLink = "parent";
    private const int MaxChain = 64;

    private readonly PagemapRun[] _runs;
    private readonly ulong[] _starts;
    private readonly Segment[] _segments;

    /// <summary>One pages file of the chain: bytes [Base, Base + Length) of the offset space.</summary>
    private readonly record struct Segment(long Base, long Length, SafeFileHandle Handle, string Path);

    private PagemapReader(string pagemapPath, string pagesPath, uint pagesId, PagemapRun[] runs, Segment[] segments)
    {
        PagemapPath = pagemapPath;
        PagesPath = pagesPath;
        PagesId = pagesId;
        _runs = runs;
        _starts = Array.ConvertAll(runs, r => r.Vaddr);
        _segments = segments;
        PagesFileLength = segments.Length == 0 ? 0 : segments[^1].Base + segments[^1].Length;
    }

    public string PagemapPath { get; }
    public string PagesPath { get; }
    public uint PagesId { get; }

    /// <summary>Bytes in the offset space: this pages file's and those of every parent image it reads from.</summary>
    public long PagesFileLength { get; }

    /// <summary>Parent images this pagemap reads pages from (0: none).</summary>
    public int ParentDepth => _segments.Length - 1;

    /// <summary>Pages that the pagemap file itself flagged PE_PARENT (resolved from the parent images).</summary>
    public ulong ParentPages { get; private init; }

    public IReadOnlyList<PagemapRun> Runs => _runs;

    /// <summary>This image's own pages file (offsets below its length; parents' pages follow in the offset space).</summary>
    public SafeFileHandle PagesHandle => _segments[0].Handle;

    public ulong PresentPages { get; private init; }

    /// <summary>Opens <paramref name="pagemapPath"/>; the pages file is looked up in <paramref name="directory"/>.</summary>
    public static PagemapReader Open(string pagemapPath, string directory) => Open(pagemapPath, directory, 0);

    private static PagemapReader Open(string pagemapPath, string directory, int depth)
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
        var own = new Segment(0, length, pages, pagesPath);
        ulong inParent = 0;
        foreach (var r in runs) if (!r.IsPresent && (r.Flags & PagemapFlags.Parent) != 0) inParent += r.NrPages;
        if (inParent == 0)
            return new PagemapReader(pagemapPath, pagesPath, head.PagesId, runs.ToArray(), [own]) { PresentPages = present };
        try
        {
            var parent = OpenParent(pagemapPath, directory, depth);
            try
            {
                var flat = ResolveParent(pagemapPath, runs, parent, length);
                var segments = new Segment[1 + parent._segments.Length];
                segments[0] = own;
                for (int i = 0; i < parent._segments.Length; i++)
                    segments[i + 1] = parent._segments[i] with { Base = parent._segments[i].Base + length };
                return new PagemapReader(pagemapPath, pagesPath, head.PagesId, flat, segments)
                {
                    PresentPages = present + inParent, ParentPages = inParent,
                };
            }
            catch
            {
                parent.Dispose();
                throw;
            }
        }
        catch
        {
            pages.Dispose();
            throw;
        }
    }

    private static PagemapReader OpenParent(string pagemapPath, string directory, int depth)
    {
        string link = Path.Combine(directory, ParentLink);
        if (depth >= MaxChain)
            throw new ImageException(pagemapPath, $"more than {MaxChain} parent images (a loop of parent links?)");
        if (!Directory.Exists(link))
            throw new ImageException(pagemapPath, $"has pages in the parent images (PE_PARENT) but {link} is no directory");
        string parentPagemap = Path.Combine(link, Path.GetFileName(pagemapPath));
        if (!File.Exists(parentPagemap))
            throw new ImageException(pagemapPath, $"has pages in the parent images (PE_PARENT) but {parentPagemap} is missing");
        return Open(parentPagemap, link, depth + 1);
    }

    /// <summary>This pagemap's runs with every PE_PARENT run replaced by the parent's (flattened) runs covering it.</summary>
    private static PagemapRun[] ResolveParent(string pagemapPath, List<PagemapRun> runs, PagemapReader parent, long shift)
    {
        var flat = new List<PagemapRun>(runs.Count * 2);
        foreach (var r in runs)
        {
            if (r.IsPresent || (r.Flags & PagemapFlags.Parent) == 0)
            {
                flat.Add(r);
                continue;
            }
            ulong at = r.Vaddr;
            int i = parent.IndexOf(at);
            while (at < r.End)
            {
                if (i < 0 || i >= parent._runs.Length || !parent._runs[i].Contains(at) || !parent._runs[i].IsPresent)
                    throw new ImageException(pagemapPath, $"page 0x{at:x} is flagged PE_PARENT but {parent.PagemapPath} has no data for it");
                var p = parent._runs[i];
                ulong end = Math.Min(p.End, r.End);
                var flags = (p.Flags & ~PagemapFlags.Parent) | PagemapFlags.Present;
                flat.Add(new PagemapRun(at, (end - at) / PagemapRun.PageSize, flags, shift + p.FileOffset + (long)(at - p.Vaddr)));
                at = end;
                i++;
            }
        }
        return flat.ToArray();
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

    /// <summary>
    /// Fills <paramref name="destination"/> from the offset space at <paramref name="offset"/>
    /// (this pages file, then the parents'; thread safe); a short file is an image error.
    /// </summary>
    public void ReadPagesAt(long offset, Span<byte> destination)
    {
        int s = _segments.Length - 1;
        while (s > 0 && _segments[s].Base > offset) s--;
        while (!destination.IsEmpty)
        {
            var seg = _segments[s];
            long inSeg = seg.Base + seg.Length - offset;
            if (inSeg <= 0 && s + 1 < _segments.Length) { s++; continue; }
            int want = inSeg > 0 && inSeg < destination.Length ? (int)inSeg : destination.Length;
            int got;
            try
            {
                got = RandomAccess.Read(seg.Handle, destination[..want], offset - seg.Base);
            }
            catch (IOException e)
            {
                throw new ImageException(seg.Path, $"read at offset {offset - seg.Base} failed: {e.Message}", e);
            }
            if (got == 0)
                throw new ImageException(seg.Path, $"truncated: end of file at offset {offset - seg.Base}");
            destination = destination[got..];
            offset += got;
        }
    }

    public void Dispose()
    {
        foreach (var s in _segments) s.Handle.Dispose();
    }
}
