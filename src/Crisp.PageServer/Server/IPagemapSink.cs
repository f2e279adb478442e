using Crisp.Images;
using Crisp.PageServer.Protocol;

namespace Crisp.PageServer.Server;

/// <summary>
/// Where a receiving page server puts what a dump sends: one pagemap (plus its pages) per
/// OPEN2'd dst_id. The images-directory sink writes pagemap-PID.img and pages-N.img as a local
/// dump would; tests may keep them in memory.
/// </summary>
public interface IPagemapSink
{
    /// <summary>Starts the pagemap of <paramref name="kind"/>/<paramref name="id"/> (a pid for processes).</summary>
    IPagemapWriter Open(PagemapKind kind, ulong id);
}
