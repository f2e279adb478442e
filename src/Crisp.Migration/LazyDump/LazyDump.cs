using Crisp.Checkpoint.Dump;

namespace Crisp.Migration;

/// <summary>
/// <c>crisp dump --lazy-pages</c>: dump every image but the lazy memory, keep the tree frozen and
/// serve that memory from it with <paramref name="server"/> until <see cref="LazyDumpServer"/>'s
/// rule decides whether the tree is killed or resumed.
/// </summary>
public static class LazyDump
{
    /// <summary>How long the destination may go on reading what is in flight once the source was killed.</summary>
    public static readonly TimeSpan InFlightGrace = TimeSpan.FromSeconds(10);

    /// <summary><paramref name="options"/> holds pid and images dir; the server is disposed at the end.</summary>
    public static LazyDumpResult Run(DumpOptions options, LazyDumpServer server)
    {
        try
        {
            var result = Dumper.Dump(options with { LazyPages = true, ServeLazy = tree => server.Serve(tree, options.ImagesDir) });
            bool resumed = result.LazyEnd == LazyDumpEnd.Resume;
            // Killed: let the destination take what is in flight. Resumed: the source refuses every
            // read already, so there is nothing to wait for.
            server.WaitAndStopAsync(resumed ? TimeSpan.Zero : InFlightGrace).GetAwaiter().GetResult();
            return new LazyDumpResult(result, resumed, !resumed && server.Succeeded, server.Outcome, server.BytesSent);
        }
        finally
        {
            server.DisposeAsync().AsTask().GetAwaiter().GetResult();
        }
    }
}
