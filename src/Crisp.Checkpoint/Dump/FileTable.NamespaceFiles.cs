using System.Text.RegularExpressions;
using Crisp.Images.Proto;
using Crisp.Native;

namespace Crisp.Checkpoint.Dump;

/// <summary>
/// Open namespace files (an fd of /proc/PID/ns/net and the like; zdtm proc-self): CRIU's NS
/// entry, the namespace named by the id the ids images and the inventory's root_ids give it.
/// Restore opens the same kind of /proc/PID/ns file of a restored process in that namespace, or
/// crisp's own when it is crisp's (Restore/RestoreNamespaceFiles.cs). A namespace that neither
/// crisp nor any process of the tree is in (one kept alive by a bind mount or by this fd alone)
/// would not be there again: refused, naming the fd.
/// </summary>
internal sealed partial class FileTable
{
    private readonly List<(FileEntry Entry, string Kind, ulong Ino, string Where)> _nsFiles = [];

    private static readonly Regex NsLink = new(@"^(net|ipc|uts|mnt|pid|user|cgroup|time):\[(\d+)\]$", RegexOptions.CultureInvariant);

    private static string? NamespaceKind(string link) => NsLink.Match(link) is { Success: true } m ? m.Groups[1].Value : null;

    /// <summary>The CLONE_NEW* flag of a namespace kind, as CRIU's ns_cflag holds it.</summary>
    internal static uint CloneFlag(string kind) => kind switch
    {
        "net" => 0x40000000, "ipc" => 0x08000000, "uts" => 0x04000000, "mnt" => 0x00020000,
        "pid" => 0x20000000, "user" => 0x10000000, "cgroup" => 0x02000000, "time" => 0x00000080,
        _ => throw new ArgumentException($"namespace kind {kind}"),
    };

    private FileEntry CollectNamespaceFile(uint id, int pid, int fd, int flags, string link, ulong ino)
    {
        string kind = NamespaceKind(link)!;
        var e = new FileEntry
        {
            Type = FdTypes.Ns, Id = id,
            Nsf = new NsFileEntry { Id = id, NsId = 0, NsCflag = CloneFlag(kind), Flags = (uint)flags },
        };
        _nsFiles.Add((e, kind, ino, $"process {pid}: fd {fd} ({link})"));
        return e;
    }

    /// <summary>
    /// Once every process was collected: each namespace file gets the id of its namespace, which
    /// must be crisp's own or one a dumped process is recorded in (<paramref name="recorded"/>:
    /// the ids images' entries and root_ids).
    /// </summary>
    public void FinishNamespaceFiles(NamespaceIds ids, IEnumerable<TaskKobjIdsEntry> recorded)
    {
        if (_nsFiles.Count == 0) return;
        var all = recorded.ToList();
        foreach (var (e, kind, ino, where) in _nsFiles)
        {
            uint nsId = ids.Find(kind, ino);
            if (nsId == 0 || !all.Any(r => IdOf(r, kind) == nsId))
                throw new CrispException($"{where} is a {kind} namespace that neither crisp nor any process of the tree is in: not supported (it would not exist after a restore)");
            e.Nsf.NsId = nsId;
        }
    }

    internal static uint IdOf(TaskKobjIdsEntry r, string kind) => kind switch
    {
        "net" => r.NetNsId, "ipc" => r.IpcNsId, "uts" => r.UtsNsId, "mnt" => r.MntNsId,
        "pid" => r.PidNsId, "user" => r.UserNsId, "cgroup" => r.CgroupNsId, "time" => r.TimeNsId,
        _ => 0,
    };
}
