namespace Crisp.Images;

public interface IPageChannel : IDisposable
{
    /// <summary>
    /// Fills <paramref name="destination"/> (a whole number of 4 KiB pages) with the pages of task
    /// <paramref name="pid"/> (its pid as recorded in pstree) starting at <paramref name="vaddr"/>.
    /// Throws <see cref="PageSourceException"/> when the pages cannot be delivered.
    /// </summary>
    void Read(int pid, ulong vaddr, Span<byte> destination);
}
