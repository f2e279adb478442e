using Crisp.Checkpoint.Dump;
using Crisp.Images;
using Crisp.Images.Proto;
using Crisp.Inject;
using Crisp.Native;

namespace Crisp.Checkpoint.Restore;

/// <summary>
/// AIO rings (mm.aios; dump side in Dump/AioRings.cs). The ring's VMA is mapped as private
/// anonymous memory and filled from the pages image like any other; then, per ring, the task
/// makes a new context with io_setup (the kernel puts its ring where it likes), the new ring's
/// tail is moved to the dumped one by completing that many one-byte writes to /dev/null
/// (synchronous, so each completion lands in the ring at once; the kernel keeps its own copy
/// of the tail and of the free slots, which only completions move), its head is set by
/// writing the header as io_getevents would, the dumped events are copied in, and the new ring
/// is moved with mremap onto the filled copy's address, which is the context id the process
/// holds (the kernel follows the move). A ring of another size than the dumped one fails the
/// restore: the process's head/tail arithmetic depends on its size.
/// </summary>
internal sealed unsafe partial class RestoreSession
{
    private const long SYS_io_setup = 206, SYS_io_submit = 209;
    private const ushort IOCB_CMD_PWRITE = 1;
    /// <summary>sizeof(struct iocb).</summary>
    private const int IocbSize = 64;
    /// <summary>iocb pointers passed to one io_submit (the kernel may take fewer; the loop goes on).</summary>
    private const int SubmitBatch = 512;

    private static bool IsAioRing(VmaEntry v) => (v.Status & VmaStatus.VMA_AREA_AIORING) != 0;

    private void RestoreAioRings(ProcessImage p, RestoreTask leader)
    {
        foreach (var ring in p.Mm.Aios) RestoreAioRing(p, leader, ring);
    }

    private void RestoreAioRing(ProcessImage p, RestoreTask leader, AioRingEntry ring)
    {
        string what = $"AIO ring 0x{ring.Id:x} ({ring.RingLen} bytes) of process {p.Pid}";
        ulong len = ring.RingLen;
        if (!p.Mm.Vmas.Any(v => IsAioRing(v) && v.Start == ring.Id && v.End - v.Start == len))
            throw new ImageException(_c.Dir.PathOf(ImageDir.MmName(p.DumpedPid)), $"{what}: no AIO ring VMA of that address and length");
        var old = new byte[len];
        RemoteMemory.Read(p.Pid, ring.Id, old);
        uint nr = BitConverter.ToUInt32(old, 4), head = BitConverter.ToUInt32(old, 8), tail = BitConverter.ToUInt32(old, 12);
        ulong expect = AioRings.EventsIn(len);
        if (nr != expect || head >= nr || tail >= nr)
            throw new ImageException(_c.Dir.PathOf(ImageDir.PagemapName(p.DumpedPid)), $"{what}: the dumped header says {nr} events, head {head}, tail {tail}; a ring of this length has {expect}");

        var scratch = new Scratch(this, p.Pid);
        ulong ctxAt = scratch.Put(new byte[8]);
        leader.Check(Code, $"io_setup({ring.NrReq}) for {what}", SYS_io_setup, ring.NrReq, (long)ctxAt);
        var ctxBytes = new byte[8];
        RemoteMemory.Read(p.Pid, ctxAt, ctxBytes);
        ulong ctx = BitConverter.ToUInt64(ctxBytes);
        var hdr = new byte[AioRings.HeaderSize];
        RemoteMemory.Read(p.Pid, ctx, hdr);
        uint newNr = BitConverter.ToUInt32(hdr, 4);
        if (newNr != nr)
            throw new CrispException($"{what}: io_setup({ring.NrReq}) made a ring of {newNr} events, the dumped one had {nr}");

        if (head != 0 || tail != 0) MoveTail(p, leader, scratch, ctx, nr, head, tail, what);

        // The events, whatever the process had not read yet; the header stays the kernel's but for head (set above).
        RemoteMemory.Write(p.Pid, ctx + AioRings.HeaderSize, old.AsSpan(AioRings.HeaderSize));
        long r = leader.Check(Code, $"mremap {what}", LibC.SYS_mremap, (long)ctx, (long)len, (long)len, LibC.MREMAP_MAYMOVE | LibC.MREMAP_FIXED, (long)ring.Id);
        if ((ulong)r != ring.Id) throw new CrispException($"{what}: mremap put the ring at 0x{r:x}");
        Log.D($"{what}: restored (head {head}, tail {tail}, {nr} events)");
    }

    /// <summary>
    /// Completes requests until the kernel's tail is the dumped <paramref name="tail"/>: a full
    /// turn first when the tail had wrapped below the head (else the kernel's count of completed
    /// events would start wrong), the head kept just behind so the ring never fills.
    /// </summary>
    private void MoveTail(ProcessImage p, RestoreTask leader, Scratch scratch, ulong ctx, uint nr, uint head, uint tail, string what)
    {
        long count = tail < head ? nr + tail : tail;
        int batch = (int)Math.Min(Math.Min(count, nr - 1), SubmitBatch);
        ulong devNull = scratch.PutString("/dev/null");
        int fd = (int)leader.Check(Code, $"open /dev/null for {what}", LibC.SYS_openat, -100, (long)devNull, LibC.O_WRONLY | LibC.O_CLOEXEC, 0);
        try
        {
            ulong buf = scratch.Put(new byte[8]);
            var iocb = new byte[IocbSize];
            BitConverter.TryWriteBytes(iocb.AsSpan(16), IOCB_CMD_PWRITE);   // aio_lio_opcode
            BitConverter.TryWriteBytes(iocb.AsSpan(20), (uint)fd);          // aio_fildes
            BitConverter.TryWriteBytes(iocb.AsSpan(24), buf);               // aio_buf
            BitConverter.TryWriteBytes(iocb.AsSpan(32), 1UL);               // aio_nbytes
            ulong iocbAt = scratch.Put(iocb);
            var ptrs = new byte[batch * 8];
            for (int i = 0; i < batch; i++) BitConverter.TryWriteBytes(ptrs.AsSpan(i * 8), iocbAt);
            ulong ptrsAt = scratch.Put(ptrs);
            long done = 0;
            while (done < count)
            {
                long n = leader.Check(Code, $"io_submit for {what}", SYS_io_submit, (long)ctx, Math.Min(count - done, batch), (long)ptrsAt);
                if (n <= 0) throw new CrispException($"{what}: io_submit took no request ({done} of {count} done)");
                done += n;
                // As io_getevents would: the reader's head, which frees the slots for the next round.
                RemoteMemory.Write(p.Pid, ctx + 8, BitConverter.GetBytes(done < head ? (uint)done : head));
            }
        }
        finally { leader.Call(Code, LibC.SYS_close, fd); }
        var hdr = new byte[AioRings.HeaderSize];
        RemoteMemory.Read(p.Pid, ctx, hdr);
        uint gotHead = BitConverter.ToUInt32(hdr, 8), gotTail = BitConverter.ToUInt32(hdr, 12);
        if (gotHead != head || gotTail != tail)
            throw new CrispException($"{what}: the new ring has head {gotHead}, tail {gotTail}; the dumped one had {head}, {tail}");
    }
}
