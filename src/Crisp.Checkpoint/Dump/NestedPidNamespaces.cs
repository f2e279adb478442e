using System.Globalization;
using Crisp.Images;
using Crisp.Inject;
using Crisp.Native;
using Crisp.Native.ProcFs;

namespace Crisp.Checkpoint.Dump;

/*
 * Pid namespaces below the dumped root's: a process of the tree that is init (pid 1) of a child
 * pid namespace, made by clone(CLONE_NEWPID) or by unshare(CLONE_NEWPID) and a fork, and the
 * processes under it, to any depth.
 *
 * CRIU 4.2 refuses such trees at dump ("Can't dump nested pid namespace") and has no image
 * field for the inner pids (pstree_entry has one pid per task). crisp records, as CRIU would:
 * pstree.img and the image names carry the pids of the root's namespace, and ids-PID.img a
 * pid_ns_id per namespace (the nested ones differ from their parent's). The pids below the
 * root's namespace go to crisp's own crisp-nested-pids.img (Crisp.Images/NestedPidsImage.cs,
 * docs/IMAGES.md), which CRIU does not read: CRIU refuses the images at restore on the ids
 * ("Can't restore sub-task in NS"), it never restores them flattened.
 *
 * What restore can make again is checked here, before anything is written:
 *  - a process in a pid namespace other than its parent's is init of it, one level below its
 *    parent's (restore clones it with CLONE_NEWPID from that parent). A process forked into the
 *    namespace its parent unshare()d into, whose init is someone else, is refused;
 *  - a process whose pid_for_children is not its own pid namespace (it called
 *    unshare(CLONE_NEWPID)) must have a child that is init of that namespace; restore sets it
 *    again with setns once that child exists. Otherwise (not forked yet, or that init is gone)
 *    it is refused: there is no task in the namespace to reach it through.
 */
internal static class NestedPidNamespaces
{
    /// <param name="tree">The frozen tree.</param>
    /// <param name="nested">For each task (by its tid here) below the root's pid namespace, its tids there, outermost first.</param>
    /// <param name="dumped">A tid here → the tid the tree's root sees.</param>
    public static List<NestedPid> Check(SeizedTree tree, IReadOnlyDictionary<int, int[]> nested, Func<int, int> dumped)
    {
        if (nested.Count == 0)
        {
            foreach (var p in tree.Processes) CheckPidForChildren(p.Pid, tree);
            return [];
        }
        int[] Levels(int tid) => nested.TryGetValue(tid, out var l) ? l : [];
        var parentForksInto = new HashSet<int>();
        var all = tree.Processes.Select(p => p.Pid).Concat(tree.Zombies).ToHashSet();
        foreach (int pid in all.Where(p => p != tree.Root.Pid))
        {
            int ppid = Proc.Stat(pid).PPid;
            int[] mine = Levels(pid), theirs = Levels(ppid);
            if (mine.Length == theirs.Length) continue;
            if (mine.Length != theirs.Length + 1 || mine[^1] != 1)
                throw new CrispException($"process {pid} (pid {(mine.Length > 0 ? mine[^1] : dumped(pid))} of its pid namespace) is in a pid namespace " +
                                         $"below its parent {ppid}'s but is not its init: not supported (only a namespace's init may be the child " +
                                         "of a process outside it)");
        }
        foreach (var p in tree.Processes)
            foreach (int child in CheckPidForChildren(p.Pid, tree))
                parentForksInto.Add(child);

        var list = new List<NestedPid>();
        foreach (var p in tree.Processes)
            foreach (var t in p.Tasks)
                if (nested.TryGetValue(t.Tid, out var l))
                    list.Add(new NestedPid(dumped(t.Tid), l, t.Tid == p.Pid && parentForksInto.Contains(p.Pid)));
        foreach (int z in tree.Zombies)
            if (nested.TryGetValue(z, out var l))
                list.Add(new NestedPid(dumped(z), l, false));
        Log.I($"the tree of {tree.Root.Pid} has {list.Count(n => n.NsTids[^1] == 1)} pid namespace(s) below its root's, {list.Count} task(s) in them");
        return list;
    }

    /// <summary>
    /// The children of <paramref name="pid"/> its pid_for_children leads into (none if that is its
    /// own namespace); refuses a pid_for_children no child of the tree is init of.
    /// </summary>
    private static List<int> CheckPidForChildren(int pid, SeizedTree tree)
    {
        string p = pid.ToString(CultureInfo.InvariantCulture);
        ulong own = LibC.Stat($"/proc/{p}/ns/pid").st_ino, forChildren;
        try { forChildren = LibC.Stat($"/proc/{p}/ns/pid_for_children").st_ino; }
        catch (SyscallException e)
        {
            throw new CrispException($"process {pid} called unshare(CLONE_NEWPID) and its new pid namespace has no process yet " +
                                     $"(/proc/{pid}/ns/pid_for_children: {e.Message}): not supported", e);
        }
        if (forChildren == own) return [];
        var inits = tree.Processes.Where(c => c.Pid != pid && Proc.Stat(c.Pid).PPid == pid &&
                                              LibC.Stat($"/proc/{c.Pid}/ns/pid").st_ino == forChildren).Select(c => c.Pid).ToList();
        if (inits.Count == 0)
            throw new CrispException($"process {pid} called unshare(CLONE_NEWPID) and the init of that pid namespace is not a child of it in the tree " +
                                     "(gone, or not forked yet): not supported");
        return inits;
    }
}
