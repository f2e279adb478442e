using System.Runtime.ExceptionServices;
using System.Runtime.InteropServices;
using Crisp.Images.Pages;
using Crisp.Inject;
using Crisp.Native;

namespace Crisp.Checkpoint.Restore;

/// <summary>
/// Copies ranges of a pages file into a process: pread into a reused buffer, then
/// process_vm_writev of the whole buffer (up to IOV_MAX ranges a call). Two workers (one per
/// CPU, at most 4) take batches in turn, so one reads while the other writes. Reading with
/// pread rather than from a mapping of the file matters on VMs: every first access to a
/// freshly mapped page costs about a microsecond, more than copying it (measured: touching a
/// 1 GiB mapping of a tmpfs file 0.45–0.47 s, pread of it 0.19–0.20 s: bench/firsttouch.c).
/// </summary>
internal static unsafe class PageWriter
{
    /// <summary>Process range [Remote, Remote+Len) gets the file's bytes at Off.</summary>
    public readonly record struct Seg(ulong Remote, long Off, ulong Len);

    private const int BufferSize = 16 << 20;

    /// <summary>Writes every segment (offsets in <paramref name="pages"/>' pages file) into process <paramref name="pid"/>.</summary>
    public static void Write(int pid, PagemapReader pages, IReadOnlyList<Seg> segs)
    {
        // Pieces no larger than a buffer, then batches of at most a buffer and IOV_MAX pieces.
        var pieces = new List<Seg>(segs.Count);
        ulong total = 0;
        foreach (var s in segs)
        {
            for (ulong o = 0; o < s.Len; o += BufferSize)
                pieces.Add(new Seg(s.Remote + o, s.Off + (long)o, Math.Min(BufferSize, s.Len - o)));
            total += s.Len;
        }
        if (pieces.Count == 0) return;
        var batches = new List<(int From, int Count)>();
        int start = 0;
        ulong bytes = 0;
        for (int i = 0; i < pieces.Count; i++)
        {
            if (i > start && (bytes + pieces[i].Len > BufferSize || i - start == LibC.IOV_MAX))
            {
                batches.Add((start, i - start));
                start = i;
                bytes = 0;
            }
            bytes += pieces[i].Len;
        }
        batches.Add((start, pieces.Count - start));

        int workers = Math.Max(1, Math.Min(Math.Min(Environment.ProcessorCount, 4), batches.Count));
        int next = -1;
        void Work()
        {
            byte* buf = (byte*)NativeMemory.AlignedAlloc(BufferSize, 4096);
            var local = new LibC.iovec[LibC.IOV_MAX];
            var remote = new LibC.iovec[LibC.IOV_MAX];
            try
            {
                int b;
                while ((b = Interlocked.Increment(ref next)) < batches.Count)
                {
                    var (from, count) = batches[b];
                    ulong pos = 0;
                    // One pread per run of pieces that are contiguous in the file.
                    for (int i = from; i < from + count;)
                    {
                        int j = i + 1;
                        ulong len = pieces[i].Len;
                        while (j < from + count && pieces[j].Off == pieces[j - 1].Off + (long)pieces[j - 1].Len) len += pieces[j++].Len;
                        pages.ReadPagesAt(pieces[i].Off, new Span<byte>(buf + pos, (int)len));
                        pos += len;
                        i = j;
                    }
                    pos = 0;
                    for (int k = 0; k < count; k++)
                    {
                        var s = pieces[from + k];
                        local[k] = new LibC.iovec((nint)(buf + pos), (nuint)s.Len);
                        remote[k] = new LibC.iovec((nint)s.Remote, (nuint)s.Len);
                        pos += s.Len;
                    }
                    WriteBatch(pid, local, remote, count, pos);
                }
            }
            finally { NativeMemory.AlignedFree(buf); }
        }
        if (workers == 1 || total < (32UL << 20)) { Work(); return; }
        var threads = new Task[workers];
        for (int w = 0; w < workers; w++) threads[w] = Task.Factory.StartNew(Work, TaskCreationOptions.LongRunning);
        try { Task.WaitAll(threads); }
        catch (AggregateException e) when (e.InnerExceptions.Count > 0) { ExceptionDispatchInfo.Capture(e.InnerExceptions[0]).Throw(); }
    }

    private static void WriteBatch(int pid, LibC.iovec[] local, LibC.iovec[] remote, int count, ulong total)
    {
        fixed (LibC.iovec* lp = local)
        fixed (LibC.iovec* rp = remote)
        {
            nint got = LibC.process_vm_writev(pid, lp, (nuint)count, rp, (nuint)count, 0);
            if (got == (nint)total) return;
            Errno.Check(got, "process_vm_writev", $"process {pid} at 0x{(ulong)remote[0].iov_base:x}");
        }
        // A partial write: go one range at a time to finish (and name the range that fails).
        for (int i = 0; i < count; i++)
            RemoteMemory.Write(pid, (ulong)remote[i].iov_base, new ReadOnlySpan<byte>((void*)local[i].iov_base, (int)local[i].iov_len));
    }
}
