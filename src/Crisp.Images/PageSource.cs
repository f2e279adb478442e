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

public interface IPageChannel : IDisposable
{
    /// <summary>
    /// Fills <paramref name="destination"/> (a whole number of 4 KiB pages) with the pages of task
    /// <paramref name="pid"/> (its pid as recorded in pstree) starting at <paramref name="vaddr"/>.
    /// Throws <see cref="PageSourceException"/> when the pages cannot be delivered.
    /// </summary>
    void Read(int pid, ulong vaddr, Span<byte> destination);
}

/// <summary>
/// A channel that can keep several requests in flight (a remote page server): answers come back
/// in request order, so the link does not idle while the caller copies the previous answer.
/// </summary>
public interface IPipelinedPageChannel : IPageChannel
{
    /// <summary>Asks for <paramref name="nrPages"/> pages of <paramref name="pid"/> at <paramref name="vaddr"/> without waiting.</summary>
    void Request(int pid, ulong vaddr, int nrPages);

    /// <summary>Takes the answer to the oldest request, which must be exactly this one.</summary>
    void Receive(int pid, ulong vaddr, Span<byte> destination);
}

/// <summary>Pages could not be delivered: image unreadable, connection lost, source gone.</summary>
public sealed class PageSourceException : Exception
{
    public PageSourceException(string message, Exception? inner = null) : base(message, inner) { }
}
