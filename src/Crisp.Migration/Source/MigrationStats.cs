using System.Text.Json.Serialization;

namespace Crisp.Migration;

/// <summary>Statistics of one migration (<c>crisp migrate --json</c>).</summary>
public sealed class MigrationStats
{
    public int SourcePid { get; set; }
    public int DestinationPid { get; set; }
    public string Destination { get; set; } = "";
    /// <summary>Frozen on the source → running on the destination.</summary>
    public double DowntimeMs { get; set; }
    /// <summary>Start of the command → every lazy page delivered (or the transfer ended).</summary>
    public double TotalMs { get; set; }
    public double DumpMs { get; set; }
    public double RestoreMs { get; set; }
    public long ImageBytes { get; set; }
    public long PageBytes { get; set; }
    public long BytesMoved { get; set; }
    public ulong LazyPages { get; set; }
    public ulong PagesDelivered { get; set; }
    public string Outcome { get; set; } = "";
    /// <summary>The destination lazy-pages daemon's own statistics (faults, pages by fault / fault-around / prefetch, latency).</summary>
    public System.Text.Json.Nodes.JsonNode? DestinationDaemon { get; set; }
    public bool Succeeded { get; set; }
    /// <summary>"post-copy" or "pre-copy".</summary>
    public string Mode { get; set; } = "post-copy";
    /// <summary>Pre-copy: pages sent by each round while the tree ran (the first is all of its memory).</summary>
    public List<ulong> PreCopyRoundPages { get; set; } = [];
    /// <summary>Pre-copy: pages written since the last round, sent while the tree was frozen.</summary>
    public ulong FinalPages { get; set; }
    /// <summary>Pre-copy: each round's timing (when its freeze began and the tree ran again, CLOCK_REALTIME ns), for comparing with the workload's own clock.</summary>
    public List<PreCopyRound> PreCopyRounds { get; set; } = [];
    /// <summary>Pre-copy: CLOCK_REALTIME (ns) when the final round's freeze began, and when the agent's "running" came back.</summary>
    public long FinalFreezeUnixNs { get; set; }
    /// <summary>See <see cref="FinalFreezeUnixNs"/>.</summary>
    public long RunningUnixNs { get; set; }

    public string ToJson() => System.Text.Json.JsonSerializer.Serialize(this, MigrationJsonContext.Default.MigrationStats);
}

/// <summary>One pre-copy round: pages, frozen time, whole round (copy and send included), freeze start and resume on CLOCK_REALTIME (ns).</summary>
public sealed class PreCopyRound
{
    public ulong Pages { get; set; }
    public double FrozenMs { get; set; }
    public double RoundMs { get; set; }
    public long FreezeUnixNs { get; set; }
    public long ResumedUnixNs { get; set; }
}

[JsonSourceGenerationOptions(WriteIndented = true, PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower)]
[JsonSerializable(typeof(MigrationStats))]
[JsonSerializable(typeof(List<ulong>))]
[JsonSerializable(typeof(List<PreCopyRound>))]
internal sealed partial class MigrationJsonContext : JsonSerializerContext;
