namespace Crisp.LazyPages;

/// <summary>A VMA that was registered with the uffd (private anonymous, not locked, not hugetlb, not vdso/vvar).</summary>
public readonly record struct LazyVma(ulong Start, ulong End)
{
    public override string ToString() => $"{Start:x}-{End:x}";
}
