using Crisp.Images.Proto;

namespace Crisp.Images;

/// <summary>A semaphore set and its values.</summary>
public sealed record IpcSemSet(IpcSemEntry Entry, ushort[] Values);
