using Crisp.Native;

namespace Crisp.LazyPages;

/// <summary>UFFDIO_COPY of fetched pages into a process, for faults and prefetch alike, with the kernel's answers sorted out.</summary>
internal sealed unsafe class PageCopier
{
    private const int PageSize = 4096;
    private readonly ServedProcesses _served;
    private readonly FailurePolicy _failures;
    private readonly LazyPagesStats _stats;
    private readonly Logger _log;

    public PageCopier(ServedProcesses served, FailurePolicy failures, LazyPagesStats stats, Logger log)
    {
        _served = served;
        _failures = failures;
        _stats = stats;
        _log = log;
    }

    /// <summary>
    /// UFFDIO_COPY of <paramref name="range"/> whose bytes are at <paramref name="buf"/> (image
    /// address <paramref name="bufImage"/>). Caller holds Gate. On EAGAIN the uncopied rest goes back
    /// to Pending. <paramref name="faultAddr"/> is 0 for prefetch.
    /// </summary>
    public FillStatus CopyRange(LazyProcess p, PendingRange range, byte* buf, ulong bufImage, ulong faultAddr)
    {
        ulong cur = range.Start, cap = range.Length;
        while (cur < range.End)
        {
            if (p.Gone) return FillStatus.Gone;
            ulong len = Math.Min(range.End - cur, cap);
            ulong img = range.ImageAddressOf(cur);
            var r = Uffd.Copy(p.Uffd, cur, buf + (img - bufImage), len);
            switch (r.Status)
            {
                case FillStatus.Ok:
                case FillStatus.Partial:
                    Account(cur, (ulong)r.Bytes, faultAddr);
                    cur += (ulong)r.Bytes;
                    break;
                case FillStatus.Exists:
                    _stats.Existed(1);
                    if (faultAddr != 0) Uffd.Wake(p.Uffd, cur, PageSize);
                    cur += PageSize;
                    break;
                case FillStatus.NoVma:
                    if (len > PageSize) { cap = Math.Max(PageSize, len / 2 / PageSize * PageSize); break; }
                    // no registered VMA at this page any more (unmapped without an event we saw?)
                    _log.W($"lazy-pages: {p.Name}: no VMA at {cur:x}, page dropped");
                    if (faultAddr != 0) Uffd.Wake(p.Uffd, cur, PageSize);
                    cur += PageSize;
                    break;
                case FillStatus.Again:
                    p.Pending.Add(new PendingRange(cur, range.End, range.ImageAddressOf(cur)));
                    return FillStatus.Again;
                case FillStatus.Gone:
                    _served.Drop(p, "exited (ESRCH)");
                    return FillStatus.Gone;
                default:
                    p.Pending.Add(new PendingRange(cur, range.End, range.ImageAddressOf(cur)));
                    _failures.FailProcess(p, $"UFFDIO_COPY at {cur:x} failed: {Errno.Name(r.Errno)}");
                    return FillStatus.Failed;
            }
        }
        return FillStatus.Ok;
    }

    private void Account(ulong start, ulong bytes, ulong faultAddr)
    {
        long pages = (long)(bytes / PageSize);
        if (faultAddr == 0) _stats.Copied(0, 0, pages, (long)bytes);
        else if (faultAddr >= start && faultAddr < start + bytes) _stats.Copied(1, pages - 1, 0, (long)bytes);
        else _stats.Copied(0, pages, 0, (long)bytes);
    }
}
