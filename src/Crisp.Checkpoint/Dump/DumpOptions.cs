namespace Crisp.Checkpoint.Dump;

public sealed record DumpOptions
{
    /// <summary>Root of the tree to dump (-t): the process and all its descendants.</summary>
    public required int Pid { get; init; }
    public required string ImagesDir { get; init; }
    /// <summary>Leave the tree running after a successful dump (-R); otherwise it is killed.</summary>
    public bool LeaveRunning { get; init; }
}

/// <summary>What a dump did, for the log and the command's summary.</summary>
public sealed record DumpResult(int Processes, int Threads, ulong PagesWritten, TimeSpan Frozen, TimeSpan Total);
