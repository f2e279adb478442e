namespace Crisp.Native;

/// <summary>One hand-off message as the daemon reads it.</summary>
public readonly record struct HandOffMessage(HandOffKind Kind, int Pid = 0, int Uffd = -1, string? Problem = null);
