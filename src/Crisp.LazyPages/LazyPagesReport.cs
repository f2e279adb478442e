using System.Diagnostics;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Crisp.LazyPages;

/// <summary>Machine-readable copy of <see cref="LazyPagesStats"/> (the --json output).</summary>
public sealed class LazyPagesReport
{
    public long Processes { get; set; }
    public long Forks { get; set; }
    public long Faults { get; set; }
    public long FaultPages { get; set; }
    public long FaultAroundPages { get; set; }
    public long PrefetchPages { get; set; }
    public long WorkingSetPages { get; set; }
    public long ZeroPages { get; set; }
    public long ExistPages { get; set; }
    public long PoisonedPages { get; set; }
    public long Bytes { get; set; }
    public long Copies { get; set; }
    public long EagainRetries { get; set; }
    public double ElapsedSeconds { get; set; }
    public double FaultLatencyP50Micros { get; set; }
    public double FaultLatencyP99Micros { get; set; }
}
