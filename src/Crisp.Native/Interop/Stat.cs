using System.Runtime.InteropServices;

namespace Crisp.Native;

public static unsafe partial class LibC
{
    /// <summary>struct stat (x86_64), 144 bytes.</summary>
    [StructLayout(LayoutKind.Sequential, Size = 144)]
    public struct stat_t
    {
        public ulong st_dev, st_ino, st_nlink;
        public uint st_mode, st_uid, st_gid;
        private int _pad0;
        public ulong st_rdev;
        public long st_size, st_blksize, st_blocks;
        // The whole struct (144 bytes): the kernel writes all of it, times included.
        public long st_atime, st_atime_nsec, st_mtime, st_mtime_nsec, st_ctime, st_ctime_nsec;
        private long _reserved0, _reserved1, _reserved2;
    }

    public const uint S_IFMT = 0xF000, S_IFSOCK = 0xC000, S_IFLNK = 0xA000, S_IFREG = 0x8000, S_IFBLK = 0x6000,
        S_IFDIR = 0x4000, S_IFCHR = 0x2000, S_IFIFO = 0x1000;

    [LibraryImport(Lib, EntryPoint = "stat", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int stat(string path, stat_t* buf);

    [LibraryImport(Lib, EntryPoint = "fstat", SetLastError = true)]
    public static partial int fstat(int fd, stat_t* buf);

    [LibraryImport(Lib, EntryPoint = "fchown", SetLastError = true)]
    public static partial int fchown(int fd, uint owner, uint group);

    public static stat_t Stat(string path)
    {
        stat_t st;
        Errno.Check(stat(path, &st), "stat", path);
        return st;
    }

    public const long SYS_kcmp = 312, SYS_tee = 276;
    public const int KCMP_FILE = 0;
    public const int SPLICE_F_NONBLOCK = 2;
}
