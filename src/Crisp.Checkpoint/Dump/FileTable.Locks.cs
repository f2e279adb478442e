using Crisp.Images;
using Crisp.Images.Proto;
using Crisp.Native;
using Crisp.Native.ProcFs;

namespace Crisp.Checkpoint.Dump;

/// <summary>
/// File locks and leases (CRIU's --file-locks), read from the "lock:" lines of each fd's fdinfo:
/// the kernel lists there the locks taken through that very open file description (and, for
/// POSIX locks, by that process). A POSIX lock belongs to the process, so it is kept once per
/// process; a flock, OFD lock or lease belongs to the description, so once for all the fds and
/// processes sharing it. Without --file-locks a tree holding any is refused, as CRIU does.
/// Mandatory locks and leases being broken are refused.
/// </summary>
internal sealed partial class FileTable
{
    public const uint FL_POSIX = 1, FL_FLOCK = 2, FL_OFD = 4, FL_LEASE = 8;

    public bool FileLocks { get; init; }

    private readonly List<FileLockEntry> _locks = [];
    private readonly HashSet<(int Pid, string Lock)> _posixLocks = [];
    private readonly HashSet<(uint FileId, string Lock)> _descriptionLocks = [];

    private void CollectLocks(int pid, int imagePid, int fd, uint fileId, FdInfo info)
    {
        var lines = FileLockLine.From(info);
        if (lines.Count == 0) return;
        string where = $"process {pid}: fd {fd}";
        if (!FileLocks)
            throw new CrispException($"{where} holds a file lock ({lines[0].Kind} {lines[0].Type}): dump with --file-locks to dump file locks and leases");
        foreach (var l in lines)
        {
            uint flag = l.Kind switch
            {
                "POSIX" => FL_POSIX, "FLOCK" => FL_FLOCK, "OFDLCK" => FL_OFD, "LEASE" => FL_LEASE,
                _ => throw new CrispException($"{where} holds a {l.Kind} lock: not supported yet"),
            };
            if (l.Mode == "MANDATORY") throw new CrispException($"{where} holds a mandatory {l.Kind} lock: not supported yet");
            if (flag == FL_LEASE && l.Mode != "ACTIVE")
                throw new CrispException($"{where} holds a lease in state {l.Mode} (being broken): not supported yet");
            uint type = l.Type switch
            {
                "READ" => 0, "WRITE" => 1, "UNLCK" => 2,
                _ => throw new CrispException($"{where} holds a {l.Kind} lock of type {l.Type}: not supported yet"),
            };
            string key = $"{l.Kind} {l.Type} {l.Ino} {l.Start} {l.End}";
            bool first = flag == FL_POSIX ? _posixLocks.Add((pid, key)) : _descriptionLocks.Add((fileId, key));
            if (!first) continue;
            _locks.Add(new FileLockEntry { Flag = flag, Type = type, Pid = imagePid, Fd = fd, Start = l.Start, Len = l.Length });
        }
    }

    /// <summary>filelocks.img, if the tree held locks (and --file-locks was given).</summary>
    public void WriteFileLocks(ImageDir dir)
    {
        if (_locks.Count > 0) dir.WriteFileLocks(_locks);
    }
}
