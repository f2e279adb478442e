using Crisp.Native;

namespace Crisp.Inject;

/// <summary>A range of another process's memory.</summary>
public readonly record struct RemoteRange(ulong Address, int Length);
