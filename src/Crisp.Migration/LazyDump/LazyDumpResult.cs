using Crisp.Checkpoint.Dump;

namespace Crisp.Migration;

/// <summary>How a lazy dump ended: the dump's result, whether the tree was resumed, and the transfer's outcome.</summary>
public sealed record LazyDumpResult(DumpResult Dump, bool Resumed, bool Succeeded, string Outcome, long BytesSent);
