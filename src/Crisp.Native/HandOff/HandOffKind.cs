namespace Crisp.Native;

public enum HandOffKind
{
    /// <summary>Nothing was readable after all.</summary>
    Nothing,
    /// <summary>A task: <see cref="HandOffMessage.Pid"/> and its uffd (-1 if it did not come: see Problem).</summary>
    Task,
    /// <summary>A zombie (CRIU sends its pid negated, and no uffd).</summary>
    Zombie,
    RestoreFinished,
    /// <summary>The connection ended (cleanly unless Problem says otherwise); the caller closes it.</summary>
    Closed,
}
