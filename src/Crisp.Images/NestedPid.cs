using Crisp.Images.Proto;

namespace Crisp.Images;

/// <summary>One task of a pid namespace below the dumped root's (crisp-nested-pids.img).</summary>
/// <param name="Tid">Its pid (tid) in the root's namespace, as pstree.img and core-TID.img have it.</param>
/// <param name="NsTids">Its pid in each namespace below the root's, outermost first, its own last.</param>
/// <param name="ParentForksInto">It is init of its namespace and its parent's pid_for_children is that namespace.</param>
public sealed record NestedPid(int Tid, int[] NsTids, bool ParentForksInto);
