namespace Crisp.Images;

/// <summary>Flags of <c>pagemap_entry.flags</c>.</summary>
[Flags]
public enum PagemapFlags : uint
{
    None = 0,
    /// <summary>The pages are in the parent (pre-dump) image directory.</summary>
    Parent = 1,
    /// <summary>The pages may be restored lazily (on fault).</summary>
    Lazy = 2,
    /// <summary>The pages' bytes are in this pagemap's pages-N.img.</summary>
    Present = 4,
}
