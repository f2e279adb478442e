using System.Net.Sockets;
using Crisp.Native;

namespace Crisp.LazyPages.Tests;

/// <summary>
/// The test process as a lazily "restored" client of its own: a uffd over an empty mapping of its
/// own, handed to the daemon, and a reader thread that checks every byte.
/// </summary>
public static unsafe class InProcessClient
{
    private const int PageSize = 4096;

    public static int MakeUffd(ulong start, ulong len)
    {
        int uffd = LibC.userfaultfd(LibC.O_CLOEXEC | LibC.O_NONBLOCK);
        Errno.Check(uffd, "userfaultfd", "test");
        var api = new LibC.uffdio_api
        {
            api = LibC.UFFD_API,
            features = LibC.UFFD_FEATURE_EVENT_REMAP | LibC.UFFD_FEATURE_EVENT_REMOVE | LibC.UFFD_FEATURE_EVENT_UNMAP | LibC.UFFD_FEATURE_POISON,
        };
        Errno.Check(LibC.ioctl(uffd, LibC.UFFDIO_API, &api), "ioctl(UFFDIO_API)", "test uffd");
        var reg = new LibC.uffdio_register { range = new LibC.uffdio_range { start = start, len = len }, mode = LibC.UFFDIO_REGISTER_MODE_MISSING };
        Errno.Check(LibC.ioctl(uffd, LibC.UFFDIO_REGISTER, &reg), "ioctl(UFFDIO_REGISTER)", "test region");
        return uffd;
    }

    /// <summary>Hands the uffd over with the fd attached to the pid message (the daemon also takes CRIU's two-message form).</summary>
    public static Socket HandOver(string socketPath, int pid, int uffd)
    {
        var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        s.Connect(new UnixDomainSocketEndPoint(socketPath));
        FdPassing.Send((int)s.Handle, BitConverter.GetBytes(pid), uffd, "lazy-pages.socket");
        return s;
    }

    public static void SendFinished(Socket s) => s.Send(BitConverter.GetBytes(LazyHandOff.RestoreFinished));

    /// <summary>Reads the region on a separate thread (a fault blocks it) and returns the first mismatch, or null.</summary>
    public static string? ReadAndCheck(nint region, long fromPage, long toPage, Func<long, bool> isZero, TimeSpan timeout)
    {
        string? result = "reader did not finish (hang)";
        var t = new Thread(() =>
        {
            for (long k = fromPage; k < toPage; k++)
            {
                ulong* w = (ulong*)(region + (nint)(k * PageSize));
                ulong img = (ulong)region + (ulong)(k * PageSize);
                bool zero = isZero(k);
                for (int i = 0; i < PageSize / 8; i++)
                {
                    ulong want = zero ? 0 : Pattern.Word(img + (ulong)i * 8);
                    if (w[i] != want) { result = $"page {k} word {i}: {w[i]:x} != {want:x}"; return; }
                }
            }
            result = null;
        }) { IsBackground = true };
        t.Start();
        if (!t.Join(timeout)) return "reader hung (no answer to a fault)";
        return result;
    }
}
