using Crisp.Checkpoint.Dump;
using Crisp.Images;
using Crisp.Images.Proto;
using Crisp.Native;

namespace Crisp.Checkpoint.Restore;

/// <summary>
/// Open namespace files (Dump/FileTable.NamespaceFiles.cs): crisp opens /proc/self/ns/KIND when
/// the namespace is crisp's own (the inventory's root_ids), else /proc/PID/ns/KIND of a restored
/// process recorded in it (every process and its namespaces exist before any file is placed),
/// and the task takes that description like any other crisp made.
/// </summary>
internal sealed partial class RestoreSession
{
    private static readonly string[] NamespaceKinds = ["net", "ipc", "uts", "mnt", "pid", "user", "cgroup", "time"];

    private void PlaceNamespaceFile(ProcessImage p, RestoreTask t, FileEntry file, int fd, bool cloexec)
    {
        var e = file.Nsf ?? throw new ImageException(_c.Dir.PathOf(ImageDir.FilesName), $"file {file.Id} is a namespace file without its entry");
        string kind = NamespaceKinds.FirstOrDefault(k => FileTable.CloneFlag(k) == e.NsCflag)
            ?? throw new ImageException(_c.Dir.PathOf(ImageDir.FilesName), $"file {file.Id}: namespace flag 0x{e.NsCflag:x} is not one crisp knows");
        string what = $"{kind} namespace file for fd {fd} of {t}";
        string path;
        if (FileTable.IdOf(_c.Inventory.RootIds, kind) == e.NsId) path = $"/proc/self/ns/{kind}";
        else if (_c.Procs.FirstOrDefault(q => FileTable.IdOf(q.Ids, kind) == e.NsId) is ProcessImage q) path = $"/proc/{q.Pid}/ns/{kind}";
        else throw new CrispException($"{what}: its namespace {e.NsId} is neither crisp's nor one of a restored process");
        _c.CrispCopies[file.Id] = Errno.Check(LibC.open(path, ((int)e.Flags & LibC.O_ACCMODE) | LibC.O_CLOEXEC, 0), "open", $"{path} ({what})");
        PlaceShared(p, t, file, fd, cloexec);
    }
}
