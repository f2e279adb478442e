using Crisp.Images;
using Crisp.Images.Pages;

namespace Crisp.Checkpoint.Dump;

/// <summary>
/// Where a dump's pages go: local images (<see cref="ImageDirPageSink"/>, pagemap-PID.img and
/// pages-N.img next to the other images) or a page server (CRIU's <c>dump --page-server</c>; the
/// adapter lives with the sockets in Crisp.Cli, since Crisp.Checkpoint knows no sockets).
/// One pagemap is open at a time; pagemaps are written one after the other, in pid order of the tree.
/// </summary>
public interface IDumpPageSink
{
    /// <summary>Starts the pagemap of process <paramref name="pid"/>.</summary>
    IDumpPagemap Open(int pid);

    /// <summary>Every pagemap was written: make them durable (a page server acknowledges CLOSE). Called before inventory.img.</summary>
    void Finish();
}
