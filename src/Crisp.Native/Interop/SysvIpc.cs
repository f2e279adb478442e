using System.Runtime.ExceptionServices;

namespace Crisp.Native;

/// <summary>
/// System V IPC through raw syscalls, with the kernel's 64-bit structure layouts (x86-64:
/// ipc64_perm, shmid64_ds, semid64_ds, msqid64_ds), so no libc wrapper reinterprets them.
/// Every call acts in the IPC namespace of the calling thread (see <see cref="NamespaceThread"/>).
/// </summary>
public static unsafe class SysvIpc
{
    public const long SYS_shmget = 29, SYS_shmat = 30, SYS_shmctl = 31, SYS_semget = 64, SYS_semctl = 66,
        SYS_shmdt = 67, SYS_msgget = 68, SYS_msgsnd = 69, SYS_msgrcv = 70, SYS_msgctl = 71;
    public const int IPC_CREAT = 0x200, IPC_EXCL = 0x400, IPC_NOWAIT = 0x800, IPC_RMID = 0, IPC_SET = 1, IPC_STAT = 2;
    public const int SHM_STAT = 13, SHM_INFO = 14, SEM_STAT = 18, SEM_INFO = 19, MSG_STAT = 11, MSG_INFO = 12;
    public const int GETALL = 13, SETALL = 17;
    public const int SHM_RDONLY = 0x1000, SHM_EXEC = 0x8000, SHM_HUGETLB = 0x800, MSG_COPY = 0x4000;
    /// <summary>In a segment's mode: IPC_RMID was called, it goes when the last attachment does.</summary>
    public const uint SHM_DEST = 0x200;

    /// <summary>ipc64_perm (48 bytes), at the start of every *_ds.</summary>
    public readonly record struct Perm(uint Key, uint Uid, uint Gid, uint Cuid, uint Cgid, uint Mode)
    {
        public static Perm From(ReadOnlySpan<byte> ds) => new(U32(ds, 0), U32(ds, 4), U32(ds, 8), U32(ds, 12), U32(ds, 16), U32(ds, 20));
    }

    public const int ShmidDsSize = 112, SemidDsSize = 104, MsqidDsSize = 120;
    public const int ShmSegszOffset = 48, ShmNattchOffset = 88, SemNsemsOffset = 80, MsgQnumOffset = 80, MsgQbytesOffset = 88;

    private static uint U32(ReadOnlySpan<byte> b, int at) => BitConverter.ToUInt32(b[at..]);
    public static ulong U64(ReadOnlySpan<byte> b, int at) => BitConverter.ToUInt64(b[at..]);

    /// <summary>Writes uid, gid and the permission bits into a *_ds for IPC_SET (the kernel takes only those, and msg_qbytes).</summary>
    public static void SetPerm(Span<byte> ds, uint uid, uint gid, uint mode)
    {
        BitConverter.TryWriteBytes(ds[4..], uid);
        BitConverter.TryWriteBytes(ds[8..], gid);
        BitConverter.TryWriteBytes(ds[20..], mode & 0x1ff);
    }

    /// <summary>*ctl(index, *_STAT) over every index up to the *_INFO maximum: (id, ds) of each object in use.</summary>
    public static List<(int Id, byte[] Ds)> List(long sys, int infoCmd, int statCmd, int dsSize, string what)
    {
        var info = new byte[128];
        long max;
        fixed (byte* p = info)
            max = Errno.Check(sys == SYS_semctl ? LibC.Syscall(sys, 0, 0, infoCmd, (long)p) : LibC.Syscall(sys, 0, infoCmd, (long)p), what, "IPC info");
        var list = new List<(int, byte[])>();
        for (int i = 0; i <= max; i++)
        {
            var ds = new byte[dsSize];
            long id;
            fixed (byte* p = ds)
                id = sys == SYS_semctl ? LibC.Syscall(sys, i, 0, statCmd, (long)p) : LibC.Syscall(sys, i, statCmd, (long)p);
            if (id == -1 && Errno.Last == Errno.EINVAL) continue;
            Errno.Check(id, what, $"index {i}");
            list.Add(((int)id, ds));
        }
        return list;
    }
}
