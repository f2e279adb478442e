using Crisp.Images.Proto;

namespace Crisp.Images;

/// <summary>
/// An IPC namespace as CRIU's ipcns-*-ID.img hold it: its sysctls, its shared memory segments
/// (their bytes in pagemap-shmem-SHMID.img and a pages file, in_pagemaps), its semaphore sets
/// (values as u16 after each record, padded to 8 bytes) and message queues (each message an
/// ipc_msg record and its bytes, padded to 8 bytes).
/// </summary>
public sealed class IpcNamespaceImage
{
    public required IpcVarEntry Var { get; init; }
    public List<IpcShmEntry> Shm { get; } = [];
    public List<IpcSemSet> Sem { get; } = [];
    public List<IpcMsgQueue> Msg { get; } = [];

    public static string VarName(uint id) => $"ipcns-var-{id}.img";
    public static string ShmName(uint id) => $"ipcns-shm-{id}.img";
    public static string SemName(uint id) => $"ipcns-sem-{id}.img";
    public static string MsgName(uint id) => $"ipcns-msg-{id}.img";

    /// <summary>Pages ids of segment contents: apart from the ones process pagemaps and memfds get.</summary>
    public const uint ShmPagesIdBase = 0x53000000;

    public void Write(ImageDir dir, uint id)
    {
        using (var w = new ImageWriter(dir.PathOf(VarName(id)), ImageMagic.IpcVar)) w.Write(Var);
        using (var w = new ImageWriter(dir.PathOf(ShmName(id)), ImageMagic.IpcnsShm))
            foreach (var s in Shm) w.Write(s);
        using (var w = new ImageWriter(dir.PathOf(SemName(id)), ImageMagic.IpcnsSem))
            foreach (var s in Sem)
            {
                if (s.Values.Length != s.Entry.Nsems)
                    throw new ImageException(w.Path, $"semaphore set {s.Entry.Desc.Id}: {s.Entry.Nsems} semaphores, {s.Values.Length} values");
                w.Write(s.Entry);
                var raw = new byte[Padded((uint)s.Values.Length * 2)];
                for (int i = 0; i < s.Values.Length; i++) BitConverter.TryWriteBytes(raw.AsSpan(i * 2), s.Values[i]);
                w.WritePayload(raw);
            }
        using (var w = new ImageWriter(dir.PathOf(MsgName(id)), ImageMagic.IpcnsMsg))
            foreach (var q in Msg)
            {
                if (q.Messages.Count != q.Entry.Qnum)
                    throw new ImageException(w.Path, $"message queue {q.Entry.Desc.Id}: qnum {q.Entry.Qnum}, {q.Messages.Count} messages");
                w.Write(q.Entry);
                foreach (var (m, data) in q.Messages)
                {
                    w.Write(m);
                    var raw = new byte[Padded(m.Msize)];
                    data.CopyTo(raw, 0);
                    w.WritePayload(raw);
                }
            }
    }

    public static bool ExistsIn(ImageDir dir, uint id) => dir.Exists(VarName(id));

    public static IpcNamespaceImage Read(ImageDir dir, uint id)
    {
        var ns = new IpcNamespaceImage { Var = ImageReader.ReadSingle(dir.PathOf(VarName(id)), ImageMagic.IpcVar, IpcVarEntry.Parser) };
        ns.Shm.AddRange(ImageReader.ReadAll(dir.PathOf(ShmName(id)), ImageMagic.IpcnsShm, IpcShmEntry.Parser));
        var sem = ImageReader.Open(dir.PathOf(SemName(id)), ImageMagic.IpcnsSem);
        while (sem.TryRead(IpcSemEntry.Parser, out var e))
        {
            var raw = sem.ReadPayload(Padded(e.Nsems * 2));
            var values = new ushort[e.Nsems];
            for (int i = 0; i < values.Length; i++) values[i] = BitConverter.ToUInt16(raw[(i * 2)..]);
            ns.Sem.Add(new IpcSemSet(e, values));
        }
        var msg = ImageReader.Open(dir.PathOf(MsgName(id)), ImageMagic.IpcnsMsg);
        while (msg.TryRead(IpcMsgEntry.Parser, out var e))
        {
            var q = new IpcMsgQueue(e);
            for (uint i = 0; i < e.Qnum; i++)
            {
                var m = msg.Read(IpcMsg.Parser);
                q.Messages.Add((m, msg.ReadPayload(Padded(m.Msize))[..(int)m.Msize].ToArray()));
            }
            ns.Msg.Add(q);
        }
        return ns;
    }

    private static uint Padded(uint n) => (n + 7) & ~7u;
}
