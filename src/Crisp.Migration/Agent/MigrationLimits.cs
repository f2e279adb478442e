namespace Crisp.Migration;

/// <summary>
/// What one source may make the agent store, checked before anything is allocated or written:
/// the agent runs as root and writes what a peer sends.
/// </summary>
public sealed record MigrationLimits
{
    /// <summary>Image files in one migration.</summary>
    public int MaxFiles { get; init; } = 10_000;
    /// <summary>Bytes of all image files of one migration together (lazy memory is not in them: it moves later, page by page).</summary>
    public long MaxTotalBytes { get; init; } = 16L << 30;
    /// <summary>Length of an image file's name (CRIU's are short: pages-1.img, fdinfo-12.img).</summary>
    public int MaxNameLength { get; init; } = 255;

    /// <summary>An image file name: letters, digits, '.', '_', '-'; not starting with '.'; no path.</summary>
    public static bool IsImageName(string name)
    {
        if (name.Length == 0 || name[0] == '.') return false;
        foreach (char c in name)
            if (!(char.IsAsciiLetterOrDigit(c) || c is '.' or '_' or '-')) return false;
        return true;
    }
}
