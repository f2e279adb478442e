using Crisp.Images.Proto;
using Crisp.Native;

namespace Crisp.Checkpoint.Restore;

/// <summary>
/// Guard regions (Dump/GuardRegions.cs): LibC.MADV_GUARD_INSTALL on each dumped range, after the
/// memory is written (a guard would fault the write) and before the task runs. Each range must
/// lie inside a restored VMA; the kernel refuses guards on some mappings (VM_SPECIAL, hugetlb),
/// and a restore without a guard the process set is a wrong one, so a failure fails the restore.
/// </summary>
internal sealed partial class RestoreSession
{

    private void InstallGuards(ProcessImage p, RestoreTask leader)
    {
        foreach (var g in p.Guards)
        {
            if (g.End <= g.Start || (g.Start | g.End) % LibC.PageSize != 0 || !p.Mm.Vmas.Any(v => v.Start <= g.Start && g.Start < v.End))
                throw new CrispException($"process {p.Pid}: guard region 0x{g.Start:x}-0x{g.End:x} is not inside a dumped VMA");
            leader.Check(Code, $"madvise(0x{g.Start:x}-0x{g.End:x}, MADV_GUARD_INSTALL)", LibC.SYS_madvise, (long)g.Start, (long)(g.End - g.Start), LibC.MADV_GUARD_INSTALL);
        }
    }
}
