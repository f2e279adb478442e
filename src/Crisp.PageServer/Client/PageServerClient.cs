using Crisp.Images;
using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using Crisp.PageServer.Protocol;
using Crisp.PageServer.Transport;

namespace Crisp.PageServer.Client;

/// <summary>
/// The sending side of a dump to a page server (CRIU's <c>dump --page-server</c>): open a pagemap
/// per task, stream its page runs and holes, and close the session, which the server acknowledges
/// only once everything is stored. Not thread-safe; one dump uses one client.
/// </summary>
/// <remarks>
/// Sequence on the wire: OPEN2(pid) -> 1 byte; ADD_F(flags, nr, vaddr, pid) [+ nr * 4096 bytes if
/// PE_PRESENT] ...; more OPEN2s for more tasks; CLOSE -> s32 status (0 = stored).
/// The socket is corked between replies so headers and pages travel in full segments.
/// </remarks>
public sealed class PageServerClient : IDisposable
{
    private readonly PageServerConnection _connection;
    private readonly Socket _socket;
    private readonly Stream _stream;
    private readonly byte[] _header = new byte[PageServerIov.Size];
    private ulong _dstId = ulong.MaxValue;
    private ulong _pendingBytes;
    private bool _closed;

    private PageServerClient(PageServerConnection connection)
    {
        _connection = connection;
        _socket = connection.Socket;
        _stream = connection.Stream;
        TcpTuning.Cork(_socket, true);
    }

    /// <summary>
    /// Connects to a page server (and authenticates, per <paramref name="transport"/>: CRIU's
    /// TLS handshake comes right after the TCP connect). <paramref name="timeout"/> bounds the
    /// connect and every later wait (default 30 s).
    /// </summary>
    public static PageServerClient Connect(EndPoint server, TimeSpan? timeout = null, PageServerTransport? transport = null)
    {
        var t = timeout ?? TimeSpan.FromSeconds(30);
        return new PageServerClient((transport ?? PageServerTransport.Plain).Connect(server, t, t));
    }

    public EndPoint? RemoteEndPoint => _socket.RemoteEndPoint;

    /// <summary>OPEN2 for the pagemap of task <paramref name="pid"/>. Returns the server's has_parent answer.</summary>
    public bool OpenPagemap(int pid) => Open(PagemapKind.Process, (ulong)pid);

    /// <summary>OPEN2 for any pagemap kind (shared memory uses its shmid).</summary>
    public bool Open(PagemapKind kind, ulong id)
    {
        EnsureIdle();
        var iov = PageServerIov.Open2(kind, id);
        SendHeader(iov);
        Span<byte> reply = stackalloc byte[1];
        WaitReply(reply, "the OPEN2 reply");
        _dstId = iov.DstId;
        return reply[0] != 0;
    }

    /// <summary>Sends one run of present pages: <paramref name="pages"/> is a whole number of 4 KiB pages at <paramref name="vaddr"/>.</summary>
    public void SendPages(ulong vaddr, ReadOnlySpan<byte> pages, PagemapFlags flags = PagemapFlags.Present)
    {
        if (pages.Length == 0 || pages.Length % PageServerIov.PageSize != 0)
            throw new ArgumentException("pages must be a non-empty whole number of 4 KiB pages", nameof(pages));
        BeginPages(vaddr, (ulong)pages.Length / PageServerIov.PageSize, flags);
        WritePageData(pages);
    }

    /// <summary>
    /// Starts a run of <paramref name="nrPages"/> present pages whose bytes follow through
    /// <see cref="WritePageData"/> (for runs not held in one buffer).
    /// </summary>
    public void BeginPages(ulong vaddr, ulong nrPages, PagemapFlags flags = PagemapFlags.Present)
    {
        if ((flags & PagemapFlags.Present) == 0)
            throw new ArgumentException("a page run carries PE_PRESENT; use SendEntry for entries without data", nameof(flags));
        EnsureIdle();
        SendHeader(PageServerIov.AddF(flags, CheckAligned(vaddr), nrPages, RequireOpen()));
        _pendingBytes = checked(nrPages * PageServerIov.PageSize);
    }

    public void WritePageData(ReadOnlySpan<byte> bytes)
    {
        if ((ulong)bytes.Length > _pendingBytes)
            throw new InvalidOperationException($"{bytes.Length} bytes written but only {_pendingBytes} belong to the current run");
        Send(bytes);
        _pendingBytes -= (ulong)bytes.Length;
    }

    /// <summary>A pagemap entry without data: a hole in the parent (PE_PARENT) or lazy pages (PE_LAZY).</summary>
    public void SendEntry(ulong vaddr, ulong nrPages, PagemapFlags flags)
    {
        if ((flags & PagemapFlags.Present) != 0)
            throw new ArgumentException("entries with PE_PRESENT carry data: use SendPages", nameof(flags));
        EnsureIdle();
        SendHeader(PageServerIov.AddF(flags, CheckAligned(vaddr), nrPages, RequireOpen()));
    }

    /// <summary>A hole whose pages are in the parent image (PE_PARENT).</summary>
    public void SendHole(ulong vaddr, ulong nrPages) => SendEntry(vaddr, nrPages, PagemapFlags.Parent);

    /// <summary>
    /// CLOSE (or FORCE_CLOSE), then waits for the server's status: returns once the server has
    /// stored everything. Throws if the status is not 0 or the server went away.
    /// </summary>
    public void Close(bool force = false)
    {
        EnsureIdle();
        SendHeader(PageServerIov.Close(force));
        Span<byte> status = stackalloc byte[4];
        WaitReply(status, "the CLOSE acknowledgement");
        int value = BinaryPrimitives.ReadInt32LittleEndian(status);
        _closed = true;
        _connection.ShutdownTls();
        try { _socket.Shutdown(SocketShutdown.Both); } catch (SocketException) { }
        if (value != 0)
            throw new PageServerProtocolException($"the page server answered CLOSE with status {value}");
    }

    public void Dispose() => _connection.Dispose();

    private ulong RequireOpen() =>
        _dstId != ulong.MaxValue ? _dstId : throw new InvalidOperationException("OpenPagemap first");

    private static ulong CheckAligned(ulong vaddr) =>
        vaddr % PageServerIov.PageSize == 0 ? vaddr : throw new ArgumentException($"vaddr 0x{vaddr:x} is not page aligned");

    private void EnsureIdle()
    {
        ObjectDisposedException.ThrowIf(_closed, this);
        if (_pendingBytes != 0)
            throw new InvalidOperationException($"{_pendingBytes} bytes of the current page run were not written");
    }

    private void SendHeader(PageServerIov iov)
    {
        iov.WriteTo(_header);
        Send(_header);
    }

    private void WaitReply(Span<byte> reply, string what)
    {
        try
        {
            TcpTuning.Cork(_socket, false); // push the request now
            TcpTuning.ReceiveExactly(_stream, reply, what);
            TcpTuning.Cork(_socket, true);
        }
        catch (Exception e) when (e is SocketException or IOException)
        {
            throw Gone(e, what);
        }
    }

    private void Send(ReadOnlySpan<byte> data)
    {
        try
        {
            _stream.Write(data);
        }
        catch (Exception e) when (e is SocketException or IOException)
        {
            throw Gone(e, "sending");
        }
    }

    private PeerGoneException Gone(Exception e, string what) =>
        new($"page server {SafeRemote()}: {what}: {(e is SocketException se ? se.SocketErrorCode.ToString() : e.InnerException is SocketException ie ? ie.SocketErrorCode.ToString() : e.Message)}", e);

    private string SafeRemote()
    {
        try { return _socket.RemoteEndPoint?.ToString() ?? "?"; } catch (ObjectDisposedException) { return "?"; }
    }
}
