using System.Net;
using System.Net.Sockets;
using Crisp.Images;
using Crisp.PageServer.Protocol;
using Crisp.PageServer.Transport;

namespace Crisp.PageServer.Client;

/// <summary>
/// One connection to the page server. <see cref="Read"/> sends GET(nr_pages, vaddr, pid) and
/// receives the ADD_F answer and the bytes straight into the caller's buffer.
/// Used by one thread at a time (see <see cref="IPageChannel"/>).
/// </summary>
public sealed class RemotePageChannel : IPipelinedPageChannel
{
    private readonly RemotePageSource _owner;
    private readonly EndPoint _server;
    private readonly RemotePageSourceOptions _options;
    private readonly byte[] _header = new byte[PageServerIov.Size];
    private readonly Queue<(int Pid, ulong Vaddr, int NrPages)> _outstanding = new();
    private PageServerConnection? _connection;
    private volatile bool _disposed;

    internal RemotePageChannel(RemotePageSource owner, EndPoint server, RemotePageSourceOptions options)
    {
        _owner = owner;
        _server = server;
        _options = options;
    }

    /// <summary>GETs sent with <see cref="Request"/> whose answers were not yet taken with <see cref="Receive"/>.</summary>
    public int Outstanding => _outstanding.Count;

    /// <summary>
    /// Pipelining for bulk prefetch: sends GET(nrPages, vaddr, pid) without waiting. Answers come
    /// back in request order and are taken with <see cref="Receive"/>; keep a few requests in
    /// flight (2-4 of 1-4 MiB) so the link never idles while the caller copies the previous chunk.
    /// </summary>
    public void Request(int pid, ulong vaddr, int nrPages)
    {
        if (nrPages <= 0) throw new ArgumentOutOfRangeException(nameof(nrPages));
        if (vaddr % PageServerIov.PageSize != 0)
            throw new ArgumentException($"vaddr 0x{vaddr:x} is not page aligned", nameof(vaddr));
        if (_disposed)
            throw new PageSourceException($"page server {_server}: channel closed");
        try
        {
            var stream = _connection?.Stream ?? Connect();
            PageServerIov.Get(pid, vaddr, (ulong)nrPages).WriteTo(_header);
            stream.Write(_header);
            _outstanding.Enqueue((pid, vaddr, nrPages));
        }
        catch (Exception e) when (e is SocketException or IOException or ObjectDisposedException)
        {
            Drop();
            throw new PageSourceException($"page server {_server}: GET pid {pid} 0x{vaddr:x} ({nrPages} pages) failed: {Describe(e)}", e);
        }
    }

    /// <summary>
    /// Takes the answer to the oldest <see cref="Request"/>, which must be for exactly
    /// <paramref name="pid"/>, <paramref name="vaddr"/> and destination.Length / 4096 pages.
    /// A short answer (fewer pages than asked) fails here: use <see cref="Read"/> with servers that shorten.
    /// </summary>
    public void Receive(int pid, ulong vaddr, Span<byte> destination)
    {
        if (!_outstanding.TryPeek(out var oldest))
            throw new InvalidOperationException("no outstanding request");
        if (oldest.Pid != pid || oldest.Vaddr != vaddr || (long)oldest.NrPages * PageServerIov.PageSize != destination.Length)
            throw new InvalidOperationException(
                $"answers come in request order: the oldest is pid {oldest.Pid} 0x{oldest.Vaddr:x} ({oldest.NrPages} pages)");
        try
        {
            var stream = _connection?.Stream ?? throw new ObjectDisposedException(nameof(RemotePageChannel));
            ulong got = ReceiveReply(stream, pid, vaddr, (ulong)oldest.NrPages, destination);
            if (got != (ulong)oldest.NrPages)
                throw new PageServerProtocolException($"the server sent {got} of {oldest.NrPages} pages for a pipelined GET");
            _outstanding.Dequeue();
        }
        catch (Exception e) when (e is SocketException or IOException or PeerGoneException or PageServerProtocolException or PageServerRefusedException or ObjectDisposedException)
        {
            Drop();
            throw new PageSourceException(
                $"page server {_server}: GET pid {pid} 0x{vaddr:x} ({oldest.NrPages} pages) failed: {Describe(e)}", e);
        }
    }

    public void Read(int pid, ulong vaddr, Span<byte> destination)
    {
        if (_outstanding.Count != 0)
            throw new InvalidOperationException($"{_outstanding.Count} pipelined requests are still outstanding on this channel");
        if (destination.Length == 0 || destination.Length % PageServerIov.PageSize != 0)
            throw new ArgumentException("destination must be a non-empty whole number of 4 KiB pages", nameof(destination));
        if (vaddr % PageServerIov.PageSize != 0)
            throw new ArgumentException($"vaddr 0x{vaddr:x} is not page aligned", nameof(vaddr));
        if (_disposed)
            throw new PageSourceException($"page server {_server}: channel closed");

        ulong nr = (ulong)destination.Length / PageServerIov.PageSize;
        try
        {
            var stream = _connection?.Stream ?? Connect();
            // The server may answer with fewer pages than asked (CRIU's does when a request
            // crosses the end of what it holds); ask again for the rest.
            while (!destination.IsEmpty)
            {
                ulong want = (ulong)destination.Length / PageServerIov.PageSize;
                PageServerIov.Get(pid, vaddr, want).WriteTo(_header);
                stream.Write(_header);
                ulong got = ReceiveReply(stream, pid, vaddr, want, destination);
                int bytes = (int)(got * PageServerIov.PageSize);
                destination = destination[bytes..];
                vaddr += (ulong)bytes;
            }
        }
        catch (Exception e) when (e is SocketException or IOException or PeerGoneException or PageServerProtocolException or PageServerRefusedException or ObjectDisposedException)
        {
            // The stream position is unknown now: drop the connection; the next Read reconnects.
            Drop();
            throw new PageSourceException(
                $"page server {_server}: GET pid {pid} 0x{vaddr:x} ({nr} pages) failed: {Describe(e)}", e);
        }
    }

    /// <summary>Reads one ADD_F answer to GET(want, vaddr, pid) and its pages into <paramref name="destination"/>; returns the page count.</summary>
    private ulong ReceiveReply(Stream stream, int pid, ulong vaddr, ulong want, Span<byte> destination)
    {
        TcpTuning.ReceiveExactly(stream, _header, "a GET reply header");
        var reply = PageServerIov.Read(_header);
        if (reply.Op is PageServerOp.AddF or PageServerOp.Add && reply.NrPages == 0)
            throw new PageServerRefusedException($"the page server has no pages for pid {pid} at 0x{vaddr:x}");
        if (reply.Op != PageServerOp.AddF || reply.Vaddr != vaddr || reply.DstId != (ulong)pid
            || reply.NrPages == 0 || reply.NrPages > want)
            throw new PageServerProtocolException($"GET(pid {pid}, 0x{vaddr:x}, {want} pages) answered with {reply}");
        int bytes = (int)(reply.NrPages * PageServerIov.PageSize);
        TcpTuning.ReceiveExactly(stream, destination[..bytes], "page data");
        return reply.NrPages;
    }

    /// <summary>The one place a channel's connection is opened (and authenticated, per the options' transport).</summary>
    internal Stream Connect()
    {
        try
        {
            var connection = _options.Transport.Connect(_server, _options.ConnectTimeout, _options.ReceiveTimeout);
            if (_options.Hello is { } hello) SayHello(connection, hello);
            _connection = connection;
            if (_disposed) Drop(); // lost a race with Dispose
            return connection.Stream;
        }
        catch (Exception e) when (e is SocketException or IOException)
        {
            throw new PageSourceException($"page server {_server}: cannot connect: {Describe(e)}", e);
        }
        catch (Exception e) when (e is PeerGoneException or PageServerRefusedException)
        {
            throw new PageSourceException($"page server {_server}: {e.Message}", e);
        }
    }

    /// <summary>crisp's hello (CrispHello.cs); the connection is disposed if it is refused or breaks.</summary>
    private void SayHello(PageServerConnection connection, CrispHello hello)
    {
        try
        {
            hello.ToIov().WriteTo(_header);
            connection.Stream.Write(_header);
            connection.Stream.Flush();
            Span<byte> status = stackalloc byte[4];
            TcpTuning.ReceiveExactly(connection.Stream, status, "the hello's answer");
            int value = System.Buffers.Binary.BinaryPrimitives.ReadInt32LittleEndian(status);
            if (value != CrispHello.Accepted)
                throw new PageServerRefusedException($"refused this destination: {CrispHello.Describe(value)}");
        }
        catch
        {
            connection.Dispose();
            throw;
        }
    }

    public void Dispose()
    {
        _disposed = true;
        Drop();
        _owner.Forget(this);
    }

    private void Drop()
    {
        _outstanding.Clear();
        var c = Interlocked.Exchange(ref _connection, null);
        c?.Dispose();
    }

    private string Describe(Exception e) => e switch
    {
        SocketException { SocketErrorCode: SocketError.TimedOut or SocketError.WouldBlock } =>
            $"no answer within {_options.ReceiveTimeout.TotalSeconds:0.###} s",
        SocketException se => se.SocketErrorCode.ToString(),
        IOException { InnerException: SocketException { SocketErrorCode: SocketError.TimedOut or SocketError.WouldBlock } } =>
            $"no answer within {_options.ReceiveTimeout.TotalSeconds:0.###} s",
        IOException { InnerException: SocketException ise } => ise.SocketErrorCode.ToString(),
        ObjectDisposedException => "channel closed",
        _ => e.Message,
    };
}
