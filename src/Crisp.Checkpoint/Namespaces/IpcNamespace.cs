using System.Globalization;
using Crisp.Images;
using Crisp.Images.Proto;
using Crisp.Native;
using static Crisp.Native.SysvIpc;

namespace Crisp.Checkpoint.Namespaces;

/*
 * An IPC namespace the tree owns, in CRIU's images (criu/ipc_ns.c has the facts).
 *
 * Dump and restore both run on a thread of crisp that joined the namespace (NamespaceThread):
 * there every *ctl call, shmat and /proc/sys/kernel/{shm,sem,msg}* act on the tree's objects.
 *
 *  - segments: listed with SHM_STAT, their bytes read through a read-only attachment of
 *    crisp's (all-zero pages are left out of the pagemap: they read back as zeros);
 *  - semaphore sets: SEM_STAT and GETALL; message queues: MSG_STAT, then every message copied
 *    with msgrcv(MSG_COPY), which leaves the queue as it was;
 *  - the sysctls, the *_next_id ones included.
 *
 * Restore, in the new namespace made with the root (CLONE_NEWIPC): sysctls first; each object
 * is made after writing its dumped id into kernel/*_next_id, so it gets the same id (index and
 * sequence) and the tree's ids keep working; then its owner and mode (IPC_SET), values,
 * messages, bytes; the *_next_id values last. Attachments (VMAs whose maps line reads
 * /SYSV<key in hex>, inode = shmid) are made again by each process with shmat at the
 * dumped address (RestoreNamespaces.cs).
 *
 * Not dumped (refused by name): segments marked for removal (SHM_DEST: their key is gone and
 * they live only as long as an attachment), hugetlb segments.
 */
internal static class IpcNamespace
{
    private const int CLONE_NEWIPC = 0x08000000;
    private const int PageSize = 4096;

    private static readonly string[] SysctlU32 = ["msgmax", "msgmnb", "msgmni", "auto_msgmni", "shmmni", "shm_rmid_forced"];

    /// <summary>Reads the namespace of <paramref name="pid"/>; segment bytes go to pagemap-shmem-ID.img in <paramref name="dir"/>.</summary>
    public static IpcNamespaceImage Dump(int pid, ImageDir dir) =>
        NamespaceThread.Run($"/proc/{pid}/ns/ipc", CLONE_NEWIPC, () => DumpHere(pid, dir));

    private static unsafe IpcNamespaceImage DumpHere(int pid, ImageDir dir)
    {
        var ns = new IpcNamespaceImage { Var = ReadVar() };
        uint pages = 0;
        foreach (var (id, ds) in List(SYS_shmctl, SHM_INFO, SHM_STAT, ShmidDsSize, "shmctl"))
        {
            var perm = Perm.From(ds);
            ulong size = U64(ds, ShmSegszOffset);
            if ((perm.Mode & SHM_DEST) != 0)
                throw new CrispException($"System V shared memory segment {id} of the tree's IPC namespace (of {pid}) is marked for removal (IPC_RMID while attached): not supported");
            var e = new IpcShmEntry { Desc = Desc(id, perm), Size = size, InPagemaps = true };
            long at = LibC.Syscall(SYS_shmat, id, 0, SHM_RDONLY);
            Errno.Check(at, "shmat", $"segment {id} of the tree's IPC namespace");
            try
            {
                if (IsHugetlb(at))
                    throw new CrispException($"System V shared memory segment {id} of the tree's IPC namespace is on hugetlbfs: not supported");
                using var w = dir.CreateShmemPagemap((ulong)id, IpcNamespaceImage.ShmPagesIdBase + pages++);
                var bytes = new ReadOnlySpan<byte>((void*)at, checked((int)RoundUp(size)));
                int run = -1;
                for (int off = 0; off <= bytes.Length; off += PageSize)
                {
                    bool data = off < bytes.Length && bytes.Slice(off, PageSize).IndexOfAnyExcept((byte)0) >= 0;
                    if (data && run < 0) run = off;
                    if (!data && run >= 0)
                    {
                        w.Write((ulong)run, bytes[run..off]);
                        run = -1;
                    }
                }
                w.Complete();
            }
            finally { LibC.Syscall(SYS_shmdt, at); }
            ns.Shm.Add(e);
        }
        foreach (var (id, ds) in List(SYS_semctl, SEM_INFO, SEM_STAT, SemidDsSize, "semctl"))
        {
            uint n = (uint)U64(ds, SemNsemsOffset);
            var values = new ushort[n];
            fixed (ushort* v = values)
                Errno.Check(LibC.Syscall(SYS_semctl, id, 0, GETALL, (long)v), "semctl(GETALL)", $"semaphore set {id}");
            ns.Sem.Add(new IpcSemSet(new IpcSemEntry { Desc = Desc(id, Perm.From(ds)), Nsems = n }, values));
        }
        int msgmax = int.Parse(File.ReadAllText("/proc/sys/kernel/msgmax").Trim(), CultureInfo.InvariantCulture);
        var buf = new byte[8 + msgmax];
        foreach (var (id, ds) in List(SYS_msgctl, MSG_INFO, MSG_STAT, MsqidDsSize, "msgctl"))
        {
            var q = new IpcMsgQueue(new IpcMsgEntry
            {
                Desc = Desc(id, Perm.From(ds)), Qbytes = (uint)U64(ds, MsgQbytesOffset), Qnum = (uint)U64(ds, MsgQnumOffset),
            });
            for (int i = 0; i < q.Entry.Qnum; i++)
            {
                long got;
                fixed (byte* b = buf)
                    got = Errno.Check(LibC.Syscall(SYS_msgrcv, id, (long)b, msgmax, i, IPC_NOWAIT | MSG_COPY), "msgrcv(MSG_COPY)", $"message {i} of queue {id}");
                q.Messages.Add((new IpcMsg { Mtype = BitConverter.ToUInt64(buf), Msize = (uint)got }, buf.AsSpan(8, (int)got).ToArray()));
            }
            ns.Msg.Add(q);
        }
        Log.I($"IPC namespace of {pid}: {ns.Shm.Count} shared memory segment(s), {ns.Sem.Count} semaphore set(s), {ns.Msg.Count} message queue(s)");
        return ns;
    }

    /// <summary>Whether crisp's attachment at <paramref name="at"/> has huge kernel pages (a SHM_HUGETLB segment).</summary>
    private static bool IsHugetlb(long at)
    {
        bool inIt = false;
        string start = $"{at:x}-";
        foreach (var line in File.ReadLines("/proc/self/smaps"))
        {
            if (line.Split(' ')[0] is var f && f.Contains('-') && f.Replace("-", "").All(char.IsAsciiHexDigit)) inIt = line.StartsWith(start, StringComparison.Ordinal);
            else if (inIt && line.StartsWith("KernelPageSize:", StringComparison.Ordinal))
                return !line.EndsWith(" 4 kB", StringComparison.Ordinal);
        }
        return false;
    }

    private static ulong RoundUp(ulong n) => (n + PageSize - 1) & ~(ulong)(PageSize - 1);

    private static IpcDescEntry Desc(int id, Perm p) => new()
    {
        Key = p.Key, Uid = p.Uid, Gid = p.Gid, Cuid = p.Cuid, Cgid = p.Cgid, Mode = p.Mode, Id = (uint)id,
    };

    private static string Sys(string name) => File.ReadAllText($"/proc/sys/{name}").Trim();
    private static uint U32(string name) => uint.Parse(Sys(name), CultureInfo.InvariantCulture);
    private static uint? NextId(string name) => int.Parse(Sys(name), CultureInfo.InvariantCulture) is var v and >= 0 ? (uint)v : null;

    private static IpcVarEntry ReadVar()
    {
        var v = new IpcVarEntry
        {
            MsgCtlmax = U32("kernel/msgmax"), MsgCtlmnb = U32("kernel/msgmnb"), MsgCtlmni = U32("kernel/msgmni"),
            AutoMsgmni = U32("kernel/auto_msgmni"),
            ShmCtlmax = ulong.Parse(Sys("kernel/shmmax"), CultureInfo.InvariantCulture),
            ShmCtlall = ulong.Parse(Sys("kernel/shmall"), CultureInfo.InvariantCulture),
            ShmCtlmni = U32("kernel/shmmni"), ShmRmidForced = U32("kernel/shm_rmid_forced"),
            MqQueuesMax = U32("fs/mqueue/queues_max"), MqMsgMax = U32("fs/mqueue/msg_max"), MqMsgsizeMax = U32("fs/mqueue/msgsize_max"),
            MqMsgDefault = U32("fs/mqueue/msg_default"), MqMsgsizeDefault = U32("fs/mqueue/msgsize_default"),
        };
        v.SemCtls.AddRange(Sys("kernel/sem").Split(['\t', ' '], StringSplitOptions.RemoveEmptyEntries).Select(s => uint.Parse(s, CultureInfo.InvariantCulture)));
        // -1 ("not set") cannot be written back: left out, as CRIU does.
        if (NextId("kernel/msg_next_id") is { } m) v.MsgNextId = m;
        if (NextId("kernel/sem_next_id") is { } s) v.SemNextId = s;
        if (NextId("kernel/shm_next_id") is { } h) v.ShmNextId = h;
        return v;
    }

    // ---- restore ------------------------------------------------------------------------

    /// <summary>Fills the (new, empty) IPC namespace of <paramref name="pid"/> with the dumped one.</summary>
    public static void Restore(int pid, IpcNamespaceImage ns, ImageDir dir) =>
        NamespaceThread.Run($"/proc/{pid}/ns/ipc", CLONE_NEWIPC, () => { RestoreHere(ns, dir); return 0; });

    private static unsafe void RestoreHere(IpcNamespaceImage ns, ImageDir dir)
    {
        var v = ns.Var;
        Write("kernel/sem", string.Join('\t', v.SemCtls));
        Write("kernel/msgmax", v.MsgCtlmax);
        Write("kernel/msgmnb", v.MsgCtlmnb);
        Write("kernel/auto_msgmni", v.AutoMsgmni);
        Write("kernel/msgmni", v.MsgCtlmni);
        Write("kernel/shmmax", v.ShmCtlmax);
        Write("kernel/shmall", v.ShmCtlall);
        Write("kernel/shmmni", v.ShmCtlmni);
        Write("kernel/shm_rmid_forced", v.ShmRmidForced);
        Write("fs/mqueue/queues_max", v.MqQueuesMax);
        Write("fs/mqueue/msg_max", v.MqMsgMax);
        Write("fs/mqueue/msgsize_max", v.MqMsgsizeMax);
        if (v.HasMqMsgDefault) Write("fs/mqueue/msg_default", v.MqMsgDefault);
        if (v.HasMqMsgsizeDefault) Write("fs/mqueue/msgsize_default", v.MqMsgsizeDefault);

        foreach (var s in ns.Shm)
        {
            string what = $"shared memory segment {s.Desc.Id} (key 0x{s.Desc.Key:x8})";
            if (s.HasHugetlbFlag && s.HugetlbFlag != 0) throw new CrispException($"{what} is a hugetlb segment: not supported");
            Write("kernel/shm_next_id", s.Desc.Id);
            long id = Errno.Check(LibC.Syscall(SYS_shmget, (int)s.Desc.Key, (long)s.Size, IPC_CREAT | IPC_EXCL | (int)(s.Desc.Mode & 0x1ff)), "shmget", what);
            SameId(id, s.Desc, what);
            SetPerm(SYS_shmctl, id, ShmidDsSize, s.Desc, what);
            if (s.HasInPagemaps && !s.InPagemaps) throw new ImageException(dir.PathOf(IpcNamespaceImage.ShmName(0)), $"{what}: contents not in a pagemap (an old CRIU image): not supported");
            if (!dir.Exists(ImageDir.ShmemPagemapName(s.Desc.Id))) continue;
            long at = Errno.Check(LibC.Syscall(SYS_shmat, id, 0, 0), "shmat", what);
            try
            {
                using var pm = dir.OpenShmemPagemap(s.Desc.Id);
                var bytes = new Span<byte>((void*)at, checked((int)RoundUp(s.Size)));
                foreach (var run in pm.Runs.Where(r => r.IsPresent))
                {
                    if (run.End > (ulong)bytes.Length) throw new ImageException(pm.PagemapPath, $"{what}: pages up to 0x{run.End:x}, past its size {s.Size}");
                    pm.ReadPagesAt(run.FileOffset, bytes[(int)run.Vaddr..(int)run.End]);
                }
            }
            finally { LibC.Syscall(SYS_shmdt, at); }
        }
        foreach (var s in ns.Sem)
        {
            string what = $"semaphore set {s.Entry.Desc.Id} (key 0x{s.Entry.Desc.Key:x8})";
            Write("kernel/sem_next_id", s.Entry.Desc.Id);
            long id = Errno.Check(LibC.Syscall(SYS_semget, (int)s.Entry.Desc.Key, s.Entry.Nsems, IPC_CREAT | IPC_EXCL | (int)(s.Entry.Desc.Mode & 0x1ff)), "semget", what);
            SameId(id, s.Entry.Desc, what);
            fixed (ushort* p = s.Values)
                Errno.Check(LibC.Syscall(SYS_semctl, id, 0, SETALL, (long)p), "semctl(SETALL)", what);
            SetPerm(SYS_semctl, id, SemidDsSize, s.Entry.Desc, what);
        }
        foreach (var q in ns.Msg)
        {
            var d = q.Entry.Desc;
            string what = $"message queue {d.Id} (key 0x{d.Key:x8})";
            Write("kernel/msg_next_id", d.Id);
            long id = Errno.Check(LibC.Syscall(SYS_msgget, (int)d.Key, IPC_CREAT | IPC_EXCL | (int)(d.Mode & 0x1ff)), "msgget", what);
            SameId(id, d, what);
            // Room first (a queue may have been given more than msgmnb), then the messages in their order.
            var ds = new byte[MsqidDsSize];
            fixed (byte* p = ds) Errno.Check(LibC.Syscall(SYS_msgctl, id, IPC_STAT, (long)p), "msgctl(IPC_STAT)", what);
            if (U64(ds, MsgQbytesOffset) != q.Entry.Qbytes)
            {
                BitConverter.TryWriteBytes(ds.AsSpan(MsgQbytesOffset), (ulong)q.Entry.Qbytes);
                fixed (byte* p = ds) Errno.Check(LibC.Syscall(SYS_msgctl, id, IPC_SET, (long)p), "msgctl(IPC_SET msg_qbytes)", what);
            }
            foreach (var (m, data) in q.Messages)
            {
                var buf = new byte[8 + data.Length];
                BitConverter.TryWriteBytes(buf, m.Mtype);
                data.CopyTo(buf, 8);
                fixed (byte* b = buf) Errno.Check(LibC.Syscall(SYS_msgsnd, id, (long)b, data.Length, IPC_NOWAIT), "msgsnd", what);
            }
            SetPerm(SYS_msgctl, id, MsqidDsSize, d, what);
        }
        if (v.HasMsgNextId) Write("kernel/msg_next_id", v.MsgNextId);
        if (v.HasSemNextId) Write("kernel/sem_next_id", v.SemNextId);
        if (v.HasShmNextId) Write("kernel/shm_next_id", v.ShmNextId);
    }

    private static void SameId(long id, IpcDescEntry d, string what)
    {
        if (id != d.Id) throw new CrispException($"{what} was made with id {id} (kernel/*_next_id not honoured?)");
    }

    private static unsafe void SetPerm(long sys, long id, int dsSize, IpcDescEntry d, string what)
    {
        var ds = new byte[dsSize];
        long Ctl(int cmd, byte* p) => sys == SYS_semctl ? LibC.Syscall(sys, id, 0, cmd, (long)p) : LibC.Syscall(sys, id, cmd, (long)p);
        fixed (byte* p = ds)
        {
            Errno.Check(Ctl(IPC_STAT, p), "IPC_STAT", what);
            var cur = Perm.From(ds);
            if (cur.Uid == d.Uid && cur.Gid == d.Gid && (cur.Mode & 0x1ff) == (d.Mode & 0x1ff)) return;
            SysvIpc.SetPerm(ds, d.Uid, d.Gid, d.Mode);
            Errno.Check(Ctl(IPC_SET, p), "IPC_SET", what);
        }
    }

    /// <summary>Writes a sysctl of the calling thread's IPC namespace, only when it differs (a write may need rights an equal value does not).</summary>
    private static void Write(string name, object value)
    {
        string text = Convert.ToString(value, CultureInfo.InvariantCulture)!;
        string path = $"/proc/sys/{name}";
        if (!name.EndsWith("_next_id", StringComparison.Ordinal) && Normal(File.ReadAllText(path)) == Normal(text)) return;
        try { File.WriteAllText(path, text + "\n"); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new CrispException($"cannot set {name} = {text} in the restored IPC namespace: {e.Message}", e);
        }
    }

    private static string Normal(string s) => string.Join(' ', s.Split(['\t', ' ', '\n'], StringSplitOptions.RemoveEmptyEntries));
}
