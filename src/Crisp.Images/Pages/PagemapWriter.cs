using System.Runtime.InteropServices;
using Crisp.Images.Proto;
using Microsoft.Win32.SafeHandles;

namespace Crisp.Images.Pages;

/// <summary>
/// Writes pagemap-PID.img and its raw pages-N.img. Runs are given in rising
/// address order; adjacent runs with equal flags merge into one entry. Page
/// bytes go to the pages file with pwrite: spans of a MiB or more straight from
/// the caller's memory, smaller ones gathered in one reusable native buffer, so
/// nothing is allocated per page. The pagemap itself is written by
/// <see cref="Complete"/>; disposing without completing leaves no pagemap (a
/// failed dump must not look like a good one).
/// </summary>
public sealed unsafe class PagemapWriter : IDisposable
{
    private const int BufferSize = 1 << 20;
    private const ulong MaxRunPages = uint.MaxValue; // compat_nr_pages is 32-bit

    private readonly SafeFileHandle _pages;
    private readonly List<PagemapRun> _runs = new();
    private byte* _buffer;
    private int _buffered;
    private long _fileOffset;   // bytes handed to pwrite so far
    private bool _completed;

    internal PagemapWriter(string pagemapPath, string pagesPath, uint pagesId)
    {
        PagemapPath = pagemapPath;
        PagesPath = pagesPath;
        PagesId = pagesId;
        try
        {
            _pages = File.OpenHandle(pagesPath, FileMode.Create, FileAccess.Write, FileShare.Read);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ImageException(pagesPath, $"cannot create: {e.Message}", e);
        }
        _buffer = (byte*)NativeMemory.AlignedAlloc(BufferSize, PagemapRun.PageSize);
    }

    public string PagemapPath { get; }
    public string PagesPath { get; }
    public uint PagesId { get; }

    /// <summary>Pages with data written so far.</summary>
    public ulong PresentPages => (ulong)(_fileOffset + _buffered) / PagemapRun.PageSize;

    public IReadOnlyList<PagemapRun> Runs => _runs;

    /// <summary>
    /// Adds pages at <paramref name="vaddr"/> whose bytes are <paramref name="pages"/>
    /// (a whole number of pages). <paramref name="flags"/> must include Present;
    /// add Lazy to mark them as lazily restorable.
    /// </summary>
    public void Write(ulong vaddr, ReadOnlySpan<byte> pages, PagemapFlags flags = PagemapFlags.Present)
    {
        if ((flags & PagemapFlags.Present) == 0)
            throw new ArgumentException("pages with data must be flagged Present; use WriteHole for runs without data", nameof(flags));
        if (pages.Length == 0 || pages.Length % PagemapRun.PageSize != 0)
            throw new ArgumentException($"length {pages.Length} is not a positive multiple of the page size", nameof(pages));
        AddRun(vaddr, (ulong)pages.Length / PagemapRun.PageSize, flags, _fileOffset + _buffered);
        AppendData(pages);
    }

    /// <summary>
    /// Adds a run with no bytes in this image: flags without Present, e.g.
    /// Lazy (served by a page server) or Parent (in the parent image).
    /// </summary>
    public void WriteHole(ulong vaddr, ulong nrPages, PagemapFlags flags)
    {
        if ((flags & PagemapFlags.Present) != 0)
            throw new ArgumentException("a hole has no data: it cannot be flagged Present", nameof(flags));
        if (nrPages == 0)
            throw new ArgumentException("a run needs at least one page", nameof(nrPages));
        AddRun(vaddr, nrPages, flags, -1);
    }

    private void AddRun(ulong vaddr, ulong nrPages, PagemapFlags flags, long fileOffset)
    {
        ObjectDisposedException.ThrowIf(_buffer == null, this);
        if (_completed)
            throw new InvalidOperationException("the pagemap is already complete");
        if (vaddr % PagemapRun.PageSize != 0)
            throw new ArgumentException($"address 0x{vaddr:x} is not page aligned", nameof(vaddr));
        if (nrPages > (ulong.MaxValue - vaddr) / PagemapRun.PageSize)
            throw new ArgumentException($"run at 0x{vaddr:x} of {nrPages} pages wraps the address space");
        if (_runs.Count > 0)
        {
            var last = _runs[^1];
            if (vaddr < last.End)
                throw new ArgumentException(
                    $"runs must be added in rising address order without overlap: 0x{vaddr:x} < 0x{last.End:x}", nameof(vaddr));
            if (vaddr == last.End && last.Flags == flags && last.NrPages + nrPages <= MaxRunPages)
            {
                _runs[^1] = last with { NrPages = last.NrPages + nrPages };
                return;
            }
        }
        while (nrPages > MaxRunPages)
        {
            _runs.Add(new PagemapRun(vaddr, MaxRunPages, flags, fileOffset));
            vaddr += MaxRunPages * PagemapRun.PageSize;
            nrPages -= MaxRunPages;
            if (fileOffset >= 0)
                fileOffset += (long)(MaxRunPages * PagemapRun.PageSize);
        }
        _runs.Add(new PagemapRun(vaddr, nrPages, flags, fileOffset));
    }

    private void AppendData(ReadOnlySpan<byte> data)
    {
        if (data.Length >= BufferSize)
        {
            Flush();
            WriteAt(data);
            return;
        }
        if (_buffered + data.Length > BufferSize)
            Flush();
        data.CopyTo(new Span<byte>(_buffer + _buffered, BufferSize - _buffered));
        _buffered += data.Length;
    }

    private void Flush()
    {
        if (_buffered == 0)
            return;
        WriteAt(new ReadOnlySpan<byte>(_buffer, _buffered));
        _buffered = 0;
    }

    private void WriteAt(ReadOnlySpan<byte> data)
    {
        try
        {
            RandomAccess.Write(_pages, data, _fileOffset);
        }
        catch (IOException e)
        {
            throw new ImageException(PagesPath, $"write of {data.Length} bytes at offset {_fileOffset} failed: {e.Message}", e);
        }
        _fileOffset += data.Length;
    }

    /// <summary>Flushes the page data and writes pagemap-PID.img.</summary>
    public void Complete()
    {
        ObjectDisposedException.ThrowIf(_buffer == null, this);
        if (_completed)
            return;
        Flush();
        using (var writer = new ImageWriter(PagemapPath, ImageMagic.Pagemap))
        {
            writer.Write(new PagemapHead { PagesId = PagesId });
            foreach (var run in _runs)
                writer.Write(ToEntry(run));
        }
        _completed = true;
    }

    /// <summary>The record for one run, readable by CRIU 3.x (compat_nr_pages) and 4.x (nr_pages).</summary>
    public static PagemapEntry ToEntry(PagemapRun run) => new()
    {
        Vaddr = run.Vaddr,
        CompatNrPages = checked((uint)run.NrPages),
        Flags = (uint)run.Flags,
        NrPages = run.NrPages,
    };

    public void Dispose()
    {
        if (_buffer == null)
            return;
        NativeMemory.AlignedFree(_buffer);
        _buffer = null;
        _pages.Dispose();
    }
}
