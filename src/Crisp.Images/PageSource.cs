namespace Crisp.Images;

/// <summary>
/// Where the bytes of a dumped process's pages come from: the local pages images, a
/// remote page server, or (on a lazy-dump source) the frozen process itself. Which pages
/// exist at all is told by the pagemap image; a source is only asked for pages the
/// pagemap lists as having data.
/// </summary>
public interface IPageSource : IDisposable
{
    /// <summary>
    /// An independent reader. Each channel is used by one thread at a time. Urgent faults and
    /// bulk prefetch use separate channels, so a fault never waits behind a prefetch transfer.
    /// </summary>
    IPageChannel OpenChannel();
}
