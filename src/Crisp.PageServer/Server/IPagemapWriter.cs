using Crisp.Images;
using Crisp.PageServer.Protocol;

namespace Crisp.PageServer.Server;

/// <summary>
/// Receives one pagemap's entries in order. After <see cref="Add"/> with <see cref="PagemapFlags.Present"/>,
/// exactly nrPages * 4096 bytes arrive through <see cref="WritePages"/>, possibly in several pieces.
/// <see cref="Commit"/> is called once the client's CLOSE arrived; disposing without Commit means the
/// session failed and whatever was written must not look like a finished image.
/// </summary>
public interface IPagemapWriter : IDisposable
{
    void Add(ulong vaddr, ulong nrPages, PagemapFlags flags);

    void WritePages(ReadOnlySpan<byte> bytes);

    void Commit();
}
