using System.Net;

namespace Crisp.Migration;

public sealed class MigrationAgentOptions
{
    public const int DefaultPort = 7317;

    /// <summary>Where to listen (port 0: any free one, see <see cref="MigrationAgent.LocalEndPoint"/>).</summary>
    public required IPEndPoint Listen { get; init; }
    /// <summary>Where per-migration image directories are made (default: the temp directory).</summary>
    public string? BaseDir { get; init; }
    /// <summary>
    /// How long a source may stay silent while it sends a migration (images and "start"): a peer
    /// that connects and sends nothing, or stops halfway, is dropped after this and the agent goes on.
    /// </summary>
    public TimeSpan PeerTimeout { get; init; } = TimeSpan.FromSeconds(30);
    /// <summary>Migrations served at once; more wait in the listen backlog.</summary>
    public int MaxConcurrent { get; init; } = 4;
    /// <summary>
    /// How a source must authenticate before its first message: TLS with a client certificate that
    /// chains to our CA, and/or a pre-shared token (<see cref="PageServerTransport.AccessKey"/>).
    /// Its TLS credentials are also used to fetch pages from the source.
    /// </summary>
    public Crisp.PageServer.Transport.PageServerTransport Transport { get; init; } = Crisp.PageServer.Transport.PageServerTransport.Plain;
    /// <summary>How long the lazy-pages daemon of a migration tries to re-establish a broken page connection (<c>--ps-reconnect-timeout</c>); zero: it does not.</summary>
    public TimeSpan ReconnectTimeout { get; init; } = Crisp.PageServer.Client.RemotePages.DefaultReconnectTimeout;
    /// <summary>
    /// The device that addresses a source moves with its tree (<c>--move-address</c>) are added
    /// on before the restore; null: this agent moves no address and refuses a source that asks.
    /// </summary>
    public string? MoveAddressDevice { get; init; }
    /// <summary>What one source may make the agent store.</summary>
    public MigrationLimits Limits { get; init; } = new();
}
