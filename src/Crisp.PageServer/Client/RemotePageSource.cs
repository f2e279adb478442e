using System.Net;
using System.Net.Sockets;
using Crisp.Images;
using Crisp.PageServer.Protocol;
using Crisp.PageServer.Transport;

namespace Crisp.PageServer.Client;

/// <summary>
/// Pages fetched from a page server in lazy mode (CRIU's <c>page-server --lazy-pages</c>, a
/// <c>dump --lazy-pages</c>, or crisp's own <see cref="Server.TcpPageServer"/>). Every channel is its own
/// TCP connection, so an urgent fault on one never queues behind a bulk prefetch on another.
/// </summary>
public sealed class RemotePageSource : IPageSource
{
    private readonly EndPoint _server;
    private readonly RemotePageSourceOptions _options;
    private readonly HashSet<RemotePageChannel> _channels = new();
    private bool _disposed;

    public RemotePageSource(EndPoint server, RemotePageSourceOptions? options = null)
    {
        _server = server;
        _options = options ?? new RemotePageSourceOptions();
    }

    public EndPoint Server => _server;

    /// <summary>Opens a channel and connects it now, so an unreachable server shows up here.</summary>
    public IPageChannel OpenChannel()
    {
        var channel = new RemotePageChannel(this, _server, _options);
        lock (_channels)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            _channels.Add(channel);
        }
        try
        {
            channel.Connect();
        }
        catch
        {
            channel.Dispose();
            throw;
        }
        return channel;
    }

    /// <summary>Closes every open channel; a Read blocked on one of them fails at once.</summary>
    public void Dispose()
    {
        RemotePageChannel[] open;
        lock (_channels)
        {
            _disposed = true;
            open = _channels.ToArray();
        }
        foreach (var c in open) c.Dispose();
    }

    internal void Forget(RemotePageChannel channel)
    {
        lock (_channels) _channels.Remove(channel);
    }
}
