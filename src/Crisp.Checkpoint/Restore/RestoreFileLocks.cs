using System.Buffers.Binary;
using Crisp.Images;
using Crisp.Images.Proto;
using Crisp.Native;

namespace Crisp.Checkpoint.Restore;

/// <summary>
/// File locks and leases (filelocks.img, CRIU's --file-locks), taken again by the process that
/// held them, through the fd the dump names, once its files are in place: POSIX locks with
/// F_SETLK (the process becomes the owner), OFD locks with F_OFD_SETLK, flocks with flock(2),
/// leases with F_SETLEASE. Never the waiting forms: a lock that cannot be had again fails the
/// restore instead of hanging it. Images with locks restored without --file-locks are refused.
/// </summary>
internal sealed unsafe partial class RestoreSession
{
    private const int F_SETLK = 6, F_OFD_SETLK = 37, F_SETLEASE = 1024;
    private const int LOCK_SH = 1, LOCK_EX = 2, LOCK_UN = 8, LOCK_NB = 4;
    private const long SYS_flock = 73;
    private const uint FL_POSIX = 1, FL_FLOCK = 2, FL_OFD = 4, FL_LEASE = 8;


    private void RestoreFileLocks(ProcessImage p, RestoreTask t)
    {
        _c.FileLocks ??= _c.Dir.ReadFileLocks();
        var mine = _c.FileLocks.Where(l => l.Pid == p.Pid).ToList();
        if (mine.Count == 0) return;
        if (!_o.FileLocks)
            throw new CrispException($"process {p.Pid} held {mine.Count} file lock(s): restore with --file-locks to take them again");
        Span<byte> fl = stackalloc byte[32];
        foreach (var l in mine)
        {
            string what = $"{Kind(l.Flag)} lock (type {l.Type}, {l.Start}+{l.Len}) on fd {l.Fd} of {t}";
            if ((l.Flag & FL_FLOCK) != 0)
            {
                int cmd = l.Type switch { 0 => LOCK_SH, 1 => LOCK_EX, 2 => LOCK_UN, _ => throw new ImageException(_c.Dir.PathOf(ImageDir.FileLocksName), $"{what}: unknown flock type") };
                t.Check(Code, $"flock {what}", SYS_flock, l.Fd, cmd | LOCK_NB);
            }
            else if ((l.Flag & (FL_POSIX | FL_OFD)) != 0)
            {
                // struct flock: short l_type, short l_whence, (pad), off_t l_start, off_t l_len, pid_t l_pid.
                fl.Clear();
                BinaryPrimitives.WriteInt16LittleEndian(fl, (short)l.Type);
                BinaryPrimitives.WriteInt16LittleEndian(fl[2..], (short)LibC.SEEK_SET);
                BinaryPrimitives.WriteInt64LittleEndian(fl[8..], l.Start);
                BinaryPrimitives.WriteInt64LittleEndian(fl[16..], l.Len);
                ulong at = new Scratch(this, t.Pid).Put(fl);
                t.Check(Code, $"fcntl {what}", LibC.SYS_fcntl, l.Fd, (l.Flag & FL_OFD) != 0 ? F_OFD_SETLK : F_SETLK, (long)at);
            }
            else if ((l.Flag & FL_LEASE) != 0)
                t.Check(Code, $"fcntl(F_SETLEASE) {what}", LibC.SYS_fcntl, l.Fd, F_SETLEASE, l.Type);
            else
                throw new ImageException(_c.Dir.PathOf(ImageDir.FileLocksName), $"{what}: unknown lock kind {l.Flag}");
        }
    }

    private static string Kind(uint flag) => flag switch
    {
        FL_POSIX => "POSIX", FL_FLOCK => "flock", FL_OFD => "OFD", FL_LEASE => "lease", _ => $"kind-{flag}",
    };
}
