using System.Globalization;
using Crisp.Inject;
using Crisp.Native;
using Crisp.Native.ProcFs;

namespace Crisp.Checkpoint.Dump;

/*
 * Which namespaces a dumped tree owns, and the pids it sees.
 *
 * A tree "owns" a namespace when its root's differs from crisp's own. What crisp dumps:
 *
 *  - pid: the root must be init (pid 1) of its own pid namespace, one level below crisp's.
 *    Pids are then recorded as CRIU records them: as the tree sees them (pstree, thread ids,
 *    image names), from the root's column of NSpid/NSpgid/NSsid. A session or group whose
 *    leader is outside the namespace shows as 0 there: refused, as CRIU does. Processes of the
 *    tree may be in pid namespaces below the root's (NestedPidNamespaces.cs): each such
 *    namespace's init is a process of the tree, a child of a process one level up, and their
 *    pids in the levels below the root's go to crisp's own crisp-nested-pids.img.
 *  - uts: hostname and domain name (utsns-ID.img, CRIU's format).
 *  - mnt: the same mounts as crisp's (as `ip netns exec` makes): recorded as crisp's, restored
 *    in crisp's. Or the shape `unshare --pid --fork --mount-proc` makes: crisp's mounts but a
 *    /proc of the tree's own pid namespace; restore makes a new mount namespace and mounts a
 *    fresh /proc there. Anything else is refused, naming the mount points.
 *  - ipc: its sysctls, SysV shared memory (with contents), semaphores and message queues
 *    (ipcns-*-ID.img, Namespaces/IpcNamespace.cs). Not owned: the tree shares the host's, and
 *    an attachment of a host segment is refused (MemoryDump).
 *  - time: CLOCK_MONOTONIC and CLOCK_BOOTTIME as seen inside (timens-ID.img, Namespaces/TimeNamespace.cs).
 *  - net: lo, its addresses and routes, iptables and nftables rules (Net/NetnsDump.cs, which
 *    also refuses other devices and a namespace shared with processes outside the tree).
 *  - user, cgroup: refused by name. Restoring them in the host's would silently change
 *    what the tree sees.
 *
 * Namespace ids follow CRIU's numbering: one counter over all kinds, crisp's own namespaces
 * first (they are the inventory's root_ids: pid 1, net 2, ipc 3, uts 4, time 5, mnt 6,
 * user 7, cgroup 8), then each new one in the order met.
 */
internal sealed class TreeNamespaces
{
    public static readonly string[] Kinds = ["pid", "net", "ipc", "uts", "time", "mnt", "user", "cgroup"];

    private readonly Dictionary<int, int> _dumped = [];    // tid here → tid as the tree sees it

    private readonly Dictionary<int, int[]> _nested = [];   // tid here → its tids below the root's namespace
    private int _rootLevel;

    public bool OwnPid { get; private init; }
    /// <summary>The tasks of pid namespaces below the root's (none for most trees): crisp-nested-pids.img.</summary>
    public IReadOnlyList<Crisp.Images.NestedPid> Nested { get; private set; } = [];
    public bool OwnUts { get; private init; }
    public bool OwnIpc { get; private init; }
    public bool OwnTime { get; private init; }
    /// <summary>The tree's root is in a network namespace other than crisp's (DumpedNetns.cs).</summary>
    public bool OwnNet { get; private init; }
    /// <summary>The tree needs a mount namespace of its own (a fresh /proc). False also when it sits in another one that shows crisp's mounts.</summary>
    public bool OwnMnt { get; private init; }

    /// <summary>Refuses a tree whose namespaces crisp cannot dump (before anything is written).</summary>
    public static TreeNamespaces Check(SeizedTree tree)
    {
        int root = tree.Root.Pid;
        var self = Inodes("self");
        var rootNs = Inodes(root.ToString(CultureInfo.InvariantCulture));
        var owned = Kinds.Where(k => rootNs[k] != 0 && rootNs[k] != self[k]).ToList();
        foreach (var p in tree.Processes.Skip(1))
        {
            var theirs = Inodes(p.Pid.ToString(CultureInfo.InvariantCulture));
            // Pid namespaces below the root's are checked by NestedPidNamespaces.
            var other = Kinds.Where(k => k != "pid" && theirs[k] != rootNs[k]).ToList();
            if (other.Count > 0)
                throw new CrispException($"process {p.Pid} is in another {string.Join(", ", other)} namespace than the tree's root {root}: " +
                                         "nested namespaces are not supported (only nested pid namespaces are)");
        }
        var refused = owned.Where(k => k is not ("pid" or "uts" or "mnt" or "ipc" or "time" or "net")).ToList();
        if (refused.Count > 0)
            throw new CrispException($"the tree of {root} has its own {string.Join(", ", refused)} namespace{(refused.Count > 1 ? "s" : "")}, " +
                                     "which crisp cannot dump yet (restoring the tree in the host's would change what it sees)");
        bool ownPid = owned.Contains("pid");
        var ns = new TreeNamespaces
        {
            OwnPid = ownPid, OwnUts = owned.Contains("uts"), OwnIpc = owned.Contains("ipc"), OwnTime = owned.Contains("time"),
            OwnNet = owned.Contains("net"),
            OwnMnt = owned.Contains("mnt") && MountsNeedOwnNamespace(root, ownPid),
        };

        int selfLevels = NsIds(Proc.Status(Environment.ProcessId), "NSpid").Length;
        // The index of the root's pid namespace in NSpid (crisp's is selfLevels - 1).
        ns._rootLevel = selfLevels - 1 + (ownPid ? 1 : 0);
        int rootLevels = NsIds(Proc.Status(root), "NSpid").Length;
        if (rootLevels != ns._rootLevel + 1)
            throw new CrispException($"process {root} is {rootLevels - selfLevels} pid namespaces below crisp's: " +
                                     "crisp dumps a tree whose root is in crisp's pid namespace or is init of one a level below it");
        foreach (var p in tree.Processes)
            foreach (var t in p.Tasks)
                ns.Record(t.Tid, p.Pid);
        foreach (int z in tree.Zombies)
            ns.Record(z, z);
        if (ns.OwnPid && ns._dumped[root] != 1)
            throw new CrispException($"process {root} is pid {ns._dumped[root]} of its own pid namespace, not its init: " +
                                     "crisp dumps a pid namespace only from its init (pid 1)");
        ns.Nested = NestedPidNamespaces.Check(tree, ns._nested, ns.Dumped);
        return ns;
    }

    /// <summary>The pid (or tid) <paramref name="tid"/> as the dumped tree sees it.</summary>
    public int Dumped(int tid) => _dumped.TryGetValue(tid, out int d) ? d : throw new CrispException($"task {tid} is not part of the dumped tree");

    /// <summary>True if <paramref name="tid"/> is a task of the tree.</summary>
    public bool Contains(int tid) => _dumped.ContainsKey(tid);

    /// <summary>Process group and session of <paramref name="pid"/> as the tree sees them.</summary>
    public (int Pgid, int Sid) GroupAndSession(int pid, ProcStat stat)
    {
        if (!OwnPid) return (stat.Pgrp, stat.Session);
        var status = Proc.Status(pid);
        int pgid = NsIds(status, "NSpgid")[_rootLevel], sid = NsIds(status, "NSsid")[_rootLevel];
        if (sid == 0 || pgid == 0)
            throw new CrispException($"process {pid}: its {(sid == 0 ? $"session leader {stat.Session}" : $"process group leader {stat.Pgrp}")} " +
                                     "is outside its pid namespace: not supported (start the tree with setsid inside the namespace)");
        return (pgid, sid);
    }

    /// <summary>The task's pid in the root's namespace and, if it is below that, in each namespace down to its own.</summary>
    private void Record(int tid, int pid)
    {
        var status = File.ReadAllText($"/proc/{pid}/task/{tid}/status");
        var ids = NsIds(status, "NSpid");
        if (ids.Length <= _rootLevel)
            throw new CrispException($"task {tid} is in a pid namespace above the tree's root's (setns?): not supported");
        _dumped[tid] = ids[_rootLevel];
        if (ids.Length > _rootLevel + 1) _nested[tid] = ids[(_rootLevel + 1)..];
    }

    private static int[] NsIds(ProcStatus status, string field) =>
        status.Fields.TryGetValue(field, out var v) ? Parse(v) : throw new CrispException($"/proc/PID/status has no {field} (kernel too old?)");

    private static int[] NsIds(string status, string field)
    {
        foreach (var line in status.Split('\n'))
            if (line.StartsWith(field + ":", StringComparison.Ordinal))
                return Parse(line[(field.Length + 1)..]);
        throw new CrispException($"/proc/PID/status has no {field} (kernel too old?)");
    }

    private static int[] Parse(string v) =>
        v.Split(['\t', ' '], StringSplitOptions.RemoveEmptyEntries).Select(s => int.Parse(s, CultureInfo.InvariantCulture)).ToArray();

    private static Dictionary<string, ulong> Inodes(string procEntry)
    {
        var d = new Dictionary<string, ulong>();
        foreach (var k in Kinds)
        {
            try { d[k] = LibC.Stat($"/proc/{procEntry}/ns/{k}").st_ino; }
            catch (SyscallException) { d[k] = 0; }
        }
        return d;
    }

    /// <summary>
    /// For a tree in another mount namespace: false if it sees the same mounts as crisp (`ip netns
    /// exec` makes such a namespace for every command); it is then restored in crisp's. True if
    /// only /proc differs and is the one of the tree's own pid namespace: restore mounts a fresh one
    /// in a new mount namespace. Anything else is refused, naming the mount points.
    /// </summary>
    private static bool MountsNeedOwnNamespace(int root, bool ownPid)
    {
        static bool UnderProc(string mp) => mp == "/proc" || mp.StartsWith("/proc/", StringComparison.Ordinal);
        static HashSet<string> Mounts(string entry) =>
            File.ReadAllLines($"/proc/{entry}/mountinfo").Select(l => l.Split(' ')).Where(f => f.Length > 4)
                .Select(f => f[4] + " " + f[^3]).ToHashSet();  // mount point, fs type
        var mine = Mounts("self");
        var theirs = Mounts(root.ToString(CultureInfo.InvariantCulture));
        // A /proc of the tree's pid namespace does not show crisp (outside it) as "self".
        string? self = null;
        try { self = new FileInfo($"/proc/{root}/root/proc/self").LinkTarget; }
        catch (IOException) { }
        bool ownProc = ownPid && theirs.Contains("/proc proc") && self != Environment.ProcessId.ToString(CultureInfo.InvariantCulture);
        var differ = mine.Except(theirs).Concat(theirs.Except(mine)).Select(m => m.Split(' ')[0])
            .Where(mp => !(ownProc && UnderProc(mp))).Distinct().ToList();
        if (differ.Count > 0)
            throw new CrispException($"the tree of {root} has its own mount namespace whose mounts differ from crisp's at " +
                                     $"{string.Join(", ", differ.Take(8))}: not supported (crisp restores a mount namespace only " +
                                     "with a fresh /proc of the tree's pid namespace, as unshare --pid --fork --mount-proc makes it)");
        if (!ownProc) Log.I($"the tree of {root} is in another mount namespace with the same mounts as crisp's: restored in crisp's");
        return ownProc;
    }
}

/// <summary>Namespace ids as CRIU numbers them: one counter over every kind, crisp's own namespaces first.</summary>
internal sealed class NamespaceIds
{
    private readonly Dictionary<(string, ulong), uint> _ids = [];
    private uint _next = 1;

    public NamespaceIds() => Own = For("self");

    /// <summary>crisp's own namespaces: the inventory's root_ids.</summary>
    public Crisp.Images.Proto.TaskKobjIdsEntry Own { get; }

    public Crisp.Images.Proto.TaskKobjIdsEntry For(int pid) => For(pid.ToString(CultureInfo.InvariantCulture));

    /// <summary>The id of the namespace of <paramref name="kind"/> with inode <paramref name="ino"/>, or 0 when no process seen so far is in it.</summary>
    public uint Find(string kind, ulong ino) => _ids.GetValueOrDefault((kind, ino));

    private Crisp.Images.Proto.TaskKobjIdsEntry For(string procEntry)
    {
        uint Id(string kind)
        {
            ulong ino;
            try { ino = LibC.Stat($"/proc/{procEntry}/ns/{kind}").st_ino; }
            catch (SyscallException) { return 0; }
            if (!_ids.TryGetValue((kind, ino), out var id))
                _ids[(kind, ino)] = id = _next++;
            return id;
        }
        // In CRIU's order, so crisp's own come out as 1..8 like CRIU's.
        uint pidNs = Id("pid"), net = Id("net"), ipc = Id("ipc"), uts = Id("uts"), time = Id("time"), mnt = Id("mnt"), user = Id("user"), cgroup = Id("cgroup");
        return new Crisp.Images.Proto.TaskKobjIdsEntry
        {
            PidNsId = pidNs, NetNsId = net, IpcNsId = ipc, UtsNsId = uts,
            TimeNsId = time, MntNsId = mnt, UserNsId = user, CgroupNsId = cgroup,
        };
    }
}
