using Crisp.Checkpoint.Dump;
using Crisp.Images;
using Crisp.PageServer.Client;

namespace Crisp.Migration;

/// <summary>
/// <c>crisp dump --page-server</c>: pages go over one TCP connection to a page server, which writes
/// pagemap-PID.img and pages-N.img in its own images directory (CRIU's semantics).
/// <see cref="Finish"/> sends CLOSE and returns once the server acknowledged that everything is stored.
/// </summary>
public sealed class PageServerDumpSink(PageServerClient client) : IDumpPageSink, IDisposable
{
    public IDumpPagemap Open(int pid)
    {
        client.OpenPagemap(pid);
        return new RemotePagemap(client);
    }

    public void Finish() => client.Close();

    public void Dispose() => client.Dispose();

    private sealed class RemotePagemap(PageServerClient client) : IDumpPagemap
    {
        public void Write(ulong vaddr, ReadOnlySpan<byte> pages, PagemapFlags flags) => client.SendPages(vaddr, pages, flags);
        public void WriteLazy(ulong vaddr, ulong nrPages) => client.SendEntry(vaddr, nrPages, PagemapFlags.Lazy);
        public void Complete() { }
        public void Dispose() { }
    }
}
