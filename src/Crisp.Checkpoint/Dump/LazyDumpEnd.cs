namespace Crisp.Checkpoint.Dump;

/// <summary>How a lazy dump ends once its pages were served (or could not be).</summary>
public enum LazyDumpEnd
{
    /// <summary>The pages moved (or the destination ran): the source tree is killed.</summary>
    Kill,
    /// <summary>Nothing was delivered, so the destination never ran: the tree goes on as it was.</summary>
    Resume,
}
