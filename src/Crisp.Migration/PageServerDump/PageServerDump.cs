using System.Net;
using System.Net.Sockets;
using Crisp.Checkpoint.Dump;
using Crisp.Native;
using Crisp.PageServer.Client;
using Crisp.PageServer.Protocol;

namespace Crisp.Migration;

/// <summary>
/// <c>crisp dump --page-server</c>: a dump whose pages go to a page server at <c>endpoint</c>
/// (<see cref="PageServerDumpSink"/>); every other image is written locally.
/// </summary>
public static class PageServerDump
{
    public static DumpResult Run(DumpOptions options, IPEndPoint endpoint, Crisp.PageServer.Transport.PageServerTransport? transport = null)
    {
        PageServerClient client;
        try { client = PageServerClient.Connect(endpoint, transport: transport); }
        catch (Exception e) when (e is SocketException or IOException)
        {
            throw new CrispException($"cannot connect to the page server at {endpoint}: {e.Message}", e);
        }
        using var sink = new PageServerDumpSink(client);
        try
        {
            return Dumper.Dump(options with { PageSink = sink });
        }
        catch (Exception e) when (e is PeerGoneException or PageServerProtocolException)
        {
            throw new CrispException($"page server {endpoint}: {e.Message}", e);
        }
    }
}
