using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Crisp.Checkpoint.Dump;
using Crisp.Native;

namespace Crisp.Migration;

public sealed class MigrationRequest
{
    /// <summary>Root of the process tree to move.</summary>
    public required int Pid { get; init; }
    /// <summary>The <c>crisp agent</c> to move it to.</summary>
    public required IPEndPoint Agent { get; init; }
    /// <summary>How long to wait for the agent at each step (connect, first page, "running").</summary>
    public TimeSpan Timeout { get; init; } = TimeSpan.FromSeconds(30);
    /// <summary>Progress: (delivered lazy pages, total lazy pages, bytes sent, time since the start).</summary>
    public Action<ulong, ulong, long, TimeSpan>? Progress { get; init; }
    /// <summary>Where the images are made before they are sent (default: the temp directory).</summary>
    public string? TempDir { get; init; }
    /// <summary>
    /// How to authenticate to the agent (TLS client certificate, its pre-shared token). Its TLS
    /// credentials also protect the page server the agent fetches from, whose every connection
    /// must in addition carry a fresh per-migration access key sent in "start".
    /// </summary>
    public Crisp.PageServer.Transport.PageServerTransport Transport { get; init; } = Crisp.PageServer.Transport.PageServerTransport.Plain;
    /// <summary>How long the source waits for a destination whose page connection broke (<see cref="LazyDumpServerOptions.ReconnectTimeout"/>).</summary>
    public TimeSpan ReconnectTimeout { get; init; } = LazyDumpServerOptions.DefaultReconnectTimeout;
    /// <summary>
    /// The page server's address as the agent is told it (default: the port bound, the address the
    /// agent sees on the control connection); a NAT or a relay in between maps it.
    /// </summary>
    public Func<IPEndPoint, IPEndPoint>? Advertise { get; init; }
    /// <summary>See <see cref="LazyDumpServerOptions.HandleSignals"/>.</summary>
    public bool HandleSignals { get; init; } = true;
    /// <summary>Pre-copy (see <see cref="MigrationSource.RunPreCopy"/>) instead of post-copy.</summary>
    public bool PreCopy { get; init; }
    /// <summary>Pre-copy: rounds while the tree runs, at most.</summary>
    public int MaxRounds { get; init; } = 8;
    /// <summary>CRIU's --tcp-established: established connections move too (TCP repair); without it a tree holding one is refused.</summary>
    public bool TcpEstablished { get; init; }
    /// <summary>CRIU's --skip-in-flight: connections a listener has not accepted yet are left out instead of refused.</summary>
    public bool SkipInFlight { get; init; }
    /// <summary>CRIU's --network-lock: how the connections are kept quiet from the freeze until they run on the destination.</summary>
    public Crisp.Checkpoint.Sockets.NetworkLockMethod NetworkLock { get; init; } = Crisp.Checkpoint.Sockets.NetworkLockMethod.Nftables;
    /// <summary>
    /// Addresses that move with the tree (<c>--move-address</c>, see Addresses/MovedAddress.cs):
    /// deleted here once the tree is frozen, added by the agent before its restore.
    /// </summary>
    public IReadOnlyList<IPAddress> MoveAddresses { get; init; } = [];
}
