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
 *  - pid: the root must be init (pid 1) of its own pid namespace, one level below crisp's, and
 *    every process of the tree in that same namespace (nested pid namespaces are refused).
 *    Pids are then recorded as CRIU records them: as the tree sees them (pstree, thread ids,
 *    image names), from the last column of NSpid/NSpgid/NSsid. A session or group whose
 *    leader is outside the namespace shows as 0 there: refused, as CRIU does.
 *  - uts: hostname and domain name (utsns-ID.img, CRIU's format).
 *  - mnt: only in the shape `unshare --mount-proc` makes: the same mounts as crisp's own
 *    namespace except a /proc of the tree's own pid namespace. Restore makes a new mount
 *    namespace and mounts a fresh /proc there. Anything else is refused, naming the mounts.
 *  - net, ipc, user, cgroup, time: refused by name. Restoring them in the host's would
 *    silently change what the tree sees.
 *
 * Namespace ids follow CRIU's numbering: one counter over all kinds, crisp's own namespaces
 * first (they are the inventory's root_ids: pid 1, net 2, ipc 3, uts 4, time 5, mnt 6,
 * user 7, cgroup 8), then each new one in the order met.
 */
internal sealed class TreeNamespaces
{
    public static readonly string[] Kinds = ["pid", "net", "ipc", "uts", "time", "mnt", "user", "cgroup"];

    private readonly Dictionary<int, int> _dumped = [];    // tid here → tid as the tree sees it

    public bool OwnPid { get; private init; }
    public bool OwnUts { get; private init; }
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
            var other = Kinds.Where(k => theirs[k] != rootNs[k]).ToList();
            if (other.Count > 0)
                throw new CrispException($"process {p.Pid} is in another {string.Join(", ", other)} namespace than the tree's root {root}: " +
                                         "nested namespaces are not supported");
        }
        var refused = owned.Where(k => k is not ("pid" or "uts" or "mnt")).ToList();
        if (refused.Count > 0)
            throw new CrispException($"the tree of {root} has its own {string.Join(", ", refused)} namespace{(refused.Count > 1 ? "s" : "")}, " +
                                     "which crisp cannot dump yet (restoring the tree in the host's would change what it sees)");
        var ns = new TreeNamespaces { OwnPid = owned.Contains("pid"), OwnUts = owned.Contains("uts"), OwnMnt = owned.Contains("mnt") };
        if (ns.OwnMnt && !ns.OwnPid)
            throw new CrispException($"the tree of {root} has its own mount namespace but shares crisp's pid namespace: not supported " +
                                     "(crisp restores a mount namespace only as `unshare --pid --fork --mount-proc` makes it)");
        if (ns.OwnMnt) CheckOnlyProcDiffers(root);

        int selfLevels = NsIds(Proc.Status(Environment.ProcessId), "NSpid").Length;
        foreach (var p in tree.Processes)
            foreach (var t in p.Tasks)
                ns._dumped[t.Tid] = ns.OwnPid ? ns.InnerPid(t.Tid, p.Pid, selfLevels, root) : t.Tid;
        foreach (int z in tree.Zombies)
            ns._dumped[z] = ns.OwnPid ? ns.InnerPid(z, z, selfLevels, root) : z;
        if (ns.OwnPid && ns._dumped[root] != 1)
            throw new CrispException($"process {root} is pid {ns._dumped[root]} of its own pid namespace, not its init: " +
                                     "crisp dumps a pid namespace only from its init (pid 1)");
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
        int pgid = NsIds(status, "NSpgid")[^1], sid = NsIds(status, "NSsid")[^1];
        if (sid == 0 || pgid == 0)
            throw new CrispException($"process {pid}: its {(sid == 0 ? $"session leader {stat.Session}" : $"process group leader {stat.Pgrp}")} " +
                                     "is outside its pid namespace: not supported (start the tree with setsid inside the namespace)");
        return (pgid, sid);
    }

    private int InnerPid(int tid, int pid, int selfLevels, int root)
    {
        var status = File.ReadAllText($"/proc/{pid}/task/{tid}/status");
        var ids = NsIds(status, "NSpid");
        if (ids.Length != selfLevels + 1)
            throw new CrispException($"task {tid} is {ids.Length - selfLevels} pid namespaces below crisp's, the tree's root {root} one: " +
                                     "nested pid namespaces are not supported");
        return ids[^1];
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
    /// The tree's mounts must be crisp's own but for /proc (and what is below it), and its /proc
    /// must be its own pid namespace's: what restore rebuilds.
    /// </summary>
    private static void CheckOnlyProcDiffers(int root)
    {
        static bool UnderProc(string mp) => mp == "/proc" || mp.StartsWith("/proc/", StringComparison.Ordinal);
        static HashSet<string> Mounts(string entry) =>
            File.ReadAllLines($"/proc/{entry}/mountinfo").Select(l => l.Split(' ')).Where(f => f.Length > 4)
                .Select(f => f[4] + " " + f[^3]).ToHashSet();  // mount point, fs type
        var mine = Mounts("self");
        var theirs = Mounts(root.ToString(CultureInfo.InvariantCulture));
        var differ = mine.Except(theirs).Concat(theirs.Except(mine)).Select(m => m.Split(' ')[0]).Where(mp => !UnderProc(mp)).Distinct().ToList();
        if (differ.Count > 0)
            throw new CrispException($"the tree of {root} has its own mount namespace whose mounts differ from the host's at " +
                                     $"{string.Join(", ", differ.Take(8))}: crisp restores a mount namespace only with a fresh /proc (unshare --mount-proc)");
        if (!theirs.Contains("/proc proc"))
            throw new CrispException($"the tree of {root} has its own mount namespace without /proc: not supported");
        // A /proc of the tree's pid namespace does not show crisp (outside it) as "self".
        string? self = null;
        try { self = new FileInfo($"/proc/{root}/root/proc/self").LinkTarget; }
        catch (IOException) { }
        if (self == Environment.ProcessId.ToString(CultureInfo.InvariantCulture))
            throw new CrispException($"the tree of {root} has its own mount namespace with the host's /proc, not one of its pid namespace: not supported");
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
