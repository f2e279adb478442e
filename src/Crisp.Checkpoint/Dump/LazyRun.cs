namespace Crisp.Checkpoint.Dump;

/// <summary>Pages at <see cref="Vaddr"/> that were dumped as PE_LAZY (their bytes are still in the frozen process).</summary>
public readonly record struct LazyRun(ulong Vaddr, ulong NrPages)
{
    public ulong End => Vaddr + NrPages * 4096;
}
