namespace Crisp.Images;

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
