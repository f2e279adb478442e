using Crisp.Images.Proto;
using Crisp.Inject;
using Crisp.Native;
using Crisp.Native.ProcFs;

namespace Crisp.Checkpoint.Dump;

/// <summary>
/// AIO rings (io_setup): the kernel maps each context's ring of completion events into the
/// process as a shared mapping of "/[aio]" whose address is the context id. The dump carries the
/// ring's pages whole (header with head and tail, and the events not yet read) and, in
/// mm.aios, the ring's address, length and the nr_events that io_setup must be asked for to
/// make a ring of the same size again (the kernel doubles and pads what it is given). The
/// restore (Restore/RestoreAio.cs) makes a new context, moves its tail and head to the dumped
/// ones and puts it at the dumped address.
/// </summary>
internal static class AioRings
{
    private const int PageSize = LibC.PageSize;
    private const uint AIO_RING_MAGIC = 0xa10a10a1, AIO_RING_COMPAT_FEATURES = 1, AIO_RING_INCOMPAT_FEATURES = 0;
    /// <summary>sizeof(struct aio_ring) (the header) and sizeof(struct io_event).</summary>
    internal const int HeaderSize = 32, EventSize = 32;

    public static bool IsRing(Vma v) => v.Shared && v.Path == "/[aio]";

    /// <summary>
    /// The io_setup argument that gives a ring of <paramref name="length"/> bytes: the kernel
    /// makes room for 2 * n + 2 events rounded up to whole pages, so the ring's event count
    /// <c>nr</c> comes back from (nr - 2) / 2 (CRIU's estimate; the CPU-count minimum the kernel
    /// applies is below what any ring of that length was asked for).
    /// </summary>
    public static uint NrRequests(ulong length) => (uint)((EventsIn(length) - 2) / 2);

    public static ulong EventsIn(ulong length) => (length - HeaderSize) / EventSize;

    /// <summary>The ring's mm.aios entry, after checking its header is the kernel's (no request can be half-made in a sane ring).</summary>
    public static AioRingEntry Entry(int pid, Vma v)
    {
        string what = $"process {pid}: AIO ring {v}";
        if (v.Length % PageSize != 0 || v.Length < PageSize)
            throw new CrispException($"{what}: its length is not whole pages");
        var header = new byte[HeaderSize];
        RemoteMemory.Read(pid, v.Start, header);
        uint U(int i) => BitConverter.ToUInt32(header, i * 4);
        uint nr = U(1), head = U(2), tail = U(3), magic = U(4), compat = U(5), incompat = U(6), headerLength = U(7);
        if (magic != AIO_RING_MAGIC || compat != AIO_RING_COMPAT_FEATURES || incompat != AIO_RING_INCOMPAT_FEATURES ||
            headerLength != HeaderSize || nr != EventsIn(v.Length) || head >= nr || tail >= nr)
            throw new CrispException($"{what}: its header is not one crisp knows (magic 0x{magic:x}, features {compat}/{incompat}, " +
                                     $"header {headerLength} bytes, {nr} events, head {head}, tail {tail}): not supported");
        if (nr < 4) throw new CrispException($"{what}: a ring of {nr} events cannot be made again");
        if (v.Length > uint.MaxValue) throw new CrispException($"{what}: larger than an image entry holds");
        return new AioRingEntry { Id = v.Start, RingLen = (uint)v.Length, NrReq = NrRequests(v.Length) };
    }
}
