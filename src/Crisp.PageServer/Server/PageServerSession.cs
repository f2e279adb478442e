using System.Buffers;
using System.Net;
using System.Net.Sockets;
using Crisp.Images;
using Crisp.PageServer.Protocol;
using Crisp.PageServer.Transport;

namespace Crisp.PageServer.Server;

// One connection to the page server. The client drives: every message starts with a 32-byte
// page_server_iov, and the session answers in order, so a client may pipeline GETs (CRIU's
// lazy-pages daemon does) and read the answers FIFO.
//
// Receive side (a dump talking to us), per CRIU:
//   OPEN2(dst_id)                 -> 1 byte has_parent (always 0: we keep no parent images)
//   PARENT(dst_id)                -> s32 0
//   ADD_F(flags, nr, vaddr, dst)  -> nothing; nr * 4096 bytes follow when flags has PE_PRESENT
//   ADD / HOLE / OPEN             -> legacy forms of the above (PE_PRESENT / PE_PARENT / no reply)
//   CLOSE / FORCE_CLOSE           -> s32 0 once everything is stored; then we wait for the
//                                    client's FIN (CRIU does too: it avoids TIME_WAIT on our side)
// A receive session that ends without CLOSE lost data: its pagemaps are discarded.
//
// Lazy side:
//   GET(nr, vaddr, pid)           -> ADD_F(PE_PRESENT, nr, vaddr, pid) + nr * 4096 bytes
// If the pages cannot be delivered the connection is closed, as CRIU does; the client notices EOF.
// A lazy session ends when the client closes the connection or sends CLOSE.
//
// Before the first header the transport authenticates the client (TLS handshake, access key);
// a client that fails is refused without a byte of the protocol read or written.
internal sealed class PageServerSession
{
    // A sanity bound, not a protocol limit: 2^36 pages is 256 TiB, more than any address space
    // a dump can have, and keeps nr_pages * 4096 far from overflowing.
    private const ulong MaxPagesPerMessage = 1UL << 36;

    private readonly int _id;
    private readonly Socket _socket;
    private Stream _stream = Stream.Null;
    private readonly PageServerOptions _options;
    private readonly Dictionary<ulong, IPagemapWriter> _writers = new();
    private IPagemapWriter? _current;
    private ulong _currentDstId = ulong.MaxValue;
    private IPageChannel? _channel;
    private long _received, _sent, _gets;
    private bool _forceClose;
    /// <summary>The connection's crisp hello, if it said one; whether its first GET was admitted.</summary>
    private CrispHello? _hello;
    private bool _admitted;

    private readonly Action? _authenticated;

    /// <param name="authenticated">called once the client passed the transport's authentication</param>
    public PageServerSession(int id, Socket socket, PageServerOptions options, Action? authenticated = null)
    {
        _authenticated = authenticated;
        _id = id;
        _socket = socket;
        _options = options;
        // Replies are tiny and latency-bound (a fault waits on them): never let Nagle hold them.
        _socket.NoDelay = true;
    }

    public async Task<PageServerSessionResult> RunAsync(CancellationToken token)
    {
        EndPoint? remote = null;
        SessionOutcome outcome;
        Exception? error = null;
        byte[] header = ArrayPool<byte>.Shared.Rent(PageServerIov.Size);
        try
        {
            remote = _socket.RemoteEndPoint;
            _stream = await _options.Transport.AcceptAsync(_socket, token).ConfigureAwait(false);
            _authenticated?.Invoke();
            outcome = await ServeAsync(header, token).ConfigureAwait(false);
        }
        catch (PeerRefusedException e) { outcome = SessionOutcome.Refused; error = e; }
        catch (OperationCanceledException) when (token.IsCancellationRequested)
        {
            outcome = SessionOutcome.Cancelled;
        }
        catch (PageServerProtocolException e) { outcome = SessionOutcome.ProtocolError; error = e; }
        catch (PageSourceException e) { outcome = SessionOutcome.SourceError; error = e; }
        catch (Exception e) when (e is ImageException or IOException { InnerException: not System.Net.Sockets.SocketException } or UnauthorizedAccessException)
        {
            outcome = SessionOutcome.StorageError;
            error = e;
        }
        catch (Exception e) when (SocketErrors.IsPeerGone(e))
        {
            outcome = token.IsCancellationRequested ? SessionOutcome.Cancelled : SessionOutcome.PeerGone;
            error = e;
        }
        catch (Exception e)
        {
            outcome = SessionOutcome.Fault;
            error = e;
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(header);
            foreach (var w in _writers.Values) DisposeQuietly(w);
            _channel?.Dispose();
            await _stream.DisposeAsync().ConfigureAwait(false);
        }
        return new PageServerSessionResult(_id, remote, outcome, error, _received, _sent, _gets, _forceClose);
    }

    private async Task<SessionOutcome> ServeAsync(byte[] header, CancellationToken token)
    {
        while (true)
        {
            if (!await ReceiveMessageAsync(header.AsMemory(0, PageServerIov.Size), token).ConfigureAwait(false))
            {
                // EOF at a message boundary: fine for a lazy client, data loss for a dump.
                if (_writers.Count > 0)
                    throw new PeerGoneException("the dump closed the connection without CLOSE: its pages are discarded");
                return SessionOutcome.Completed;
            }
            var iov = PageServerIov.Read(header);
            switch (iov.Op)
            {
                case PageServerOp.Open:
                    OpenWriter(iov.DstId);
                    break;
                case PageServerOp.Open2:
                    OpenWriter(iov.DstId);
                    await SendSmallAsync(header, 1, 0, token).ConfigureAwait(false); // has_parent = 0
                    break;
                case PageServerOp.Parent:
                    RequireSink(iov);
                    await SendSmallAsync(header, 4, 0, token).ConfigureAwait(false); // no parent images
                    break;
                case PageServerOp.AddF:
                    await AddAsync(iov, iov.PagemapFlags, token).ConfigureAwait(false);
                    break;
                case PageServerOp.Add:
                    await AddAsync(iov, PagemapFlags.Present, token).ConfigureAwait(false);
                    break;
                case PageServerOp.Hole:
                    await AddAsync(iov, PagemapFlags.Parent, token).ConfigureAwait(false);
                    break;
                case PageServerOp.Get:
                    if (!_admitted)
                    {
                        int status = _options.Gate?.Admit(_hello, fetching: true) ?? CrispHello.Accepted;
                        if (status != CrispHello.Accepted)
                        {
                            if (_hello is not null) await RefuseGetAsync(header, iov, token).ConfigureAwait(false);
                            throw new PageServerProtocolException($"GET refused: {CrispHello.Describe(status)}");
                        }
                        _admitted = true;
                    }
                    await ServeGetAsync(iov, token).ConfigureAwait(false);
                    break;
                case CrispHello.Op:
                    {
                        var hello = CrispHello.FromIov(iov);
                        int status = _options.Gate?.Admit(hello, fetching: false) ?? CrispHello.Accepted;
                        await SendSmallAsync(header, 4, status, token).ConfigureAwait(false);
                        if (status != CrispHello.Accepted)
                            throw new PageServerProtocolException($"hello refused: {CrispHello.Describe(status)}");
                        _hello = hello;
                        break;
                    }
                case PageServerOp.Close:
                case PageServerOp.ForceClose:
                    _forceClose = iov.Op == PageServerOp.ForceClose;
                    // Everything before CLOSE is stored by now (writes are synchronous): acknowledge.
                    // If storing fails the exception ends the session without an acknowledgement,
                    // so the dump fails too instead of believing its pages are safe.
                    foreach (var w in _writers.Values) w.Commit();
                    await SendSmallAsync(header, 4, 0, token).ConfigureAwait(false);
                    if (_stream is System.Net.Security.SslStream ssl)
                        await ssl.ShutdownAsync().ConfigureAwait(false); // close_notify: CRIU's gnutls_bye waits for it
                    await AwaitClientCloseAsync(header, token).ConfigureAwait(false);
                    return SessionOutcome.Completed;
                default:
                    throw new PageServerProtocolException($"unknown command {iov}");
            }
        }
    }

    private void RequireSink(PageServerIov iov)
    {
        if (_options.Sink is null)
            throw new PageServerProtocolException($"{iov.Op} refused: this page server only serves lazy pages");
    }

    private void OpenWriter(ulong dstId)
    {
        if (_options.Sink is null)
            throw new PageServerProtocolException("OPEN refused: this page server only serves lazy pages");
        if (!PageServerIov.TryDecodeDstId(dstId, out var kind, out var id))
            throw new PageServerProtocolException($"unknown pagemap type in dst_id 0x{dstId:x}");
        if (!_writers.TryGetValue(dstId, out var writer))
        {
            writer = _options.Sink.Open(kind, id);
            _writers.Add(dstId, writer);
        }
        _current = writer;
        _currentDstId = dstId;
    }

    private async Task AddAsync(PageServerIov iov, PagemapFlags flags, CancellationToken token)
    {
        RequireSink(iov);
        if (iov.DstId != _currentDstId)
            OpenWriter(iov.DstId); // CRIU tolerates I/O without OPEN ("deprecated IO w/o open")
        if (iov.Vaddr % PageServerIov.PageSize != 0 || iov.NrPages > MaxPagesPerMessage)
            throw new PageServerProtocolException($"bad entry {iov}");
        _current!.Add(iov.Vaddr, iov.NrPages, flags);
        if ((flags & PagemapFlags.Present) == 0) return;

        ulong remaining = iov.NrPages * PageServerIov.PageSize;
        byte[] buffer = ArrayPool<byte>.Shared.Rent((int)Math.Min((ulong)_options.ChunkSize, Math.Max(remaining, 1)));
        try
        {
            // Whole chunks (a multiple of the page size) go to the writer, never a torn page.
            while (remaining > 0)
            {
                int want = (int)Math.Min((ulong)buffer.Length, remaining);
                int got = 0;
                while (got < want)
                {
                    int n = await ReadSomeAsync(buffer.AsMemory(got, want - got), token).ConfigureAwait(false);
                    if (n == 0)
                        throw new PeerGoneException($"connection closed with {remaining - (ulong)got} bytes of {iov} still to come");
                    got += n;
                    _received += n;
                }
                _current.WritePages(buffer.AsSpan(0, want));
                remaining -= (ulong)want;
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    private async Task ServeGetAsync(PageServerIov iov, CancellationToken token)
    {
        var source = _options.Source ?? throw new PageServerProtocolException("GET refused: this page server has no pages to serve");
        if (iov.NrPages == 0 || iov.NrPages > MaxPagesPerMessage || iov.Vaddr % PageServerIov.PageSize != 0 || iov.DstId > int.MaxValue)
            throw new PageServerProtocolException($"bad request {iov}");
        _gets++;
        _channel ??= source.OpenChannel();
        int pid = (int)iov.DstId;
        ulong total = checked(iov.NrPages * PageServerIov.PageSize);

        // The header goes out in the same write as the first chunk; then two buffers alternate so
        // the next chunk is read from the source while the previous one is on its way.
        int chunk = (int)Math.Min((ulong)_options.ChunkSize, total);
        byte[] a = ArrayPool<byte>.Shared.Rent(PageServerIov.Size + chunk);
        byte[]? b = total > (ulong)chunk ? ArrayPool<byte>.Shared.Rent(chunk) : null;
        try
        {
            PageServerIov.AddF(PagemapFlags.Present, iov.Vaddr, iov.NrPages, iov.DstId).WriteTo(a);
            ulong vaddr = iov.Vaddr, remaining = total;
            int first = chunk;
            try
            {
                _channel.Read(pid, vaddr, a.AsSpan(PageServerIov.Size, first));
            }
            catch (PageSourceException) when (_hello is not null)
            {
                // Nothing of the answer left yet: a crisp client is told, so it does not ask
                // again; CRIU's just sees the end. (A failure after the first chunk can only close.)
                await RefuseGetAsync(a, iov, token).ConfigureAwait(false);
                throw;
            }
            vaddr += (ulong)first;
            remaining -= (ulong)first;
            var pending = SendAllAsync(a.AsMemory(0, PageServerIov.Size + first), token);
            byte[] next = b ?? a; // b exists whenever the loop below runs
            byte[] inFlight = a;
            while (remaining > 0)
            {
                int n = (int)Math.Min((ulong)chunk, remaining);
                _channel.Read(pid, vaddr, next.AsSpan(0, n));
                await pending.ConfigureAwait(false);
                pending = SendAllAsync(next.AsMemory(0, n), token);
                vaddr += (ulong)n;
                remaining -= (ulong)n;
                (inFlight, next) = (next, inFlight);
            }
            await pending.ConfigureAwait(false);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(a);
            if (b is not null) ArrayPool<byte>.Shared.Return(b);
        }
    }

    /// <summary>ADD_F with nr_pages 0: "no such pages" (what CRIU's server answers for pages it cannot find).</summary>
    private Task RefuseGetAsync(byte[] header, PageServerIov get, CancellationToken token)
    {
        PageServerIov.AddF(PagemapFlags.Present, get.Vaddr, 0, get.DstId).WriteTo(header);
        return SendAllAsync(header.AsMemory(0, PageServerIov.Size), token);
    }

    private async Task SendAllAsync(ReadOnlyMemory<byte> data, CancellationToken token)
    {
        try
        {
            await _stream.WriteAsync(data, token).ConfigureAwait(false);
        }
        catch (IOException e)
        {
            throw new PeerGoneException($"sending: {e.Message}", e);
        }
        _sent += data.Length;
    }

    /// <summary>One read from the connection; a broken connection (socket or TLS record) is the peer gone, not a storage error.</summary>
    private async ValueTask<int> ReadSomeAsync(Memory<byte> buffer, CancellationToken token)
    {
        try
        {
            return await _stream.ReadAsync(buffer, token).ConfigureAwait(false);
        }
        catch (IOException e)
        {
            throw new PeerGoneException($"receiving: {e.Message}", e);
        }
    }

    private Task SendSmallAsync(byte[] scratch, int length, int value, CancellationToken token)
    {
        // Replies are host-order integers of 1 or 4 bytes.
        BitConverter.TryWriteBytes(scratch.AsSpan(0, 4), value);
        return SendAllAsync(scratch.AsMemory(0, length), token);
    }

    /// <summary>Reads one header; false on a clean EOF before its first byte.</summary>
    private async ValueTask<bool> ReceiveMessageAsync(Memory<byte> header, CancellationToken token)
    {
        int got = 0;
        while (got < header.Length)
        {
            int n = await ReadSomeAsync(header[got..], token).ConfigureAwait(false);
            if (n == 0)
            {
                if (got == 0) return false;
                throw new PeerGoneException($"connection closed in the middle of a message header ({got} of {header.Length} bytes)");
            }
            got += n;
            _received += n;
        }
        return true;
    }

    private async Task AwaitClientCloseAsync(byte[] scratch, CancellationToken token)
    {
        using var linger = CancellationTokenSource.CreateLinkedTokenSource(token);
        linger.CancelAfter(_options.CloseLingerTimeout);
        try
        {
            int n = await ReadSomeAsync(scratch.AsMemory(0, 1), linger.Token).ConfigureAwait(false);
            if (n != 0)
                throw new PageServerProtocolException("data after CLOSE");
        }
        catch (OperationCanceledException) when (!token.IsCancellationRequested)
        {
            // The client keeps its end open (CRIU's FORCE_CLOSE case): the session is over anyway.
        }
        catch (Exception e) when (SocketErrors.IsPeerGone(e) && !token.IsCancellationRequested)
        {
            // Reset after our acknowledgement: everything was stored, nothing is lost.
        }
    }

    private static void DisposeQuietly(IDisposable d)
    {
        try { d.Dispose(); } catch { /* already failing; the original error is what matters */ }
    }
}
