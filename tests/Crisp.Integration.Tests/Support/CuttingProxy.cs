using System.Net;
using System.Net.Sockets;

namespace Crisp.Integration.Tests.Support;

/// <summary>
/// A TCP relay on loopback between a lazy-pages daemon and its page server that breaks the
/// connections mid-transfer: each time the bytes relayed from the server cross the next
/// threshold, every open connection is reset on both sides (RST, as a dead path or `ss -K` looks)
/// and <see cref="Crossed"/> fires. New connections are relayed as before.
/// </summary>
public sealed class CuttingProxy : IDisposable
{
    private readonly Socket _listener = new(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
    private readonly Func<IPEndPoint> _upstream;
    private readonly long[] _thresholds;
    private readonly bool _cut;
    private readonly object _lock = new();
    private readonly List<Socket> _open = new();
    private readonly CancellationTokenSource _stop = new();
    private long _down;
    private int _next, _connections;

    /// <param name="upstream">where to relay to (asked at each connection: a port learnt later works)</param>
    /// <param name="thresholds">byte counts (server to client, all connections together), ascending</param>
    /// <param name="cut">reset the connections at each threshold (false: only fire <see cref="Crossed"/>)</param>
    public CuttingProxy(Func<IPEndPoint> upstream, long[] thresholds, bool cut = true)
    {
        _upstream = upstream;
        _thresholds = thresholds;
        _cut = cut;
        _listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        _listener.Listen(16);
        _ = Task.Run(AcceptLoop);
    }

    public IPEndPoint EndPoint => (IPEndPoint)_listener.LocalEndPoint!;
    public int Port => EndPoint.Port;
    /// <summary>Thresholds crossed so far.</summary>
    public int Cuts { get { lock (_lock) return _next; } }
    public int Connections => Volatile.Read(ref _connections);
    public long BytesDown => Interlocked.Read(ref _down);
    /// <summary>Fires with the threshold's index, on a relay thread, after the connections were reset.</summary>
    public event Action<int>? Crossed;

    private async Task AcceptLoop()
    {
        while (!_stop.IsCancellationRequested)
        {
            Socket client;
            try { client = await _listener.AcceptAsync(_stop.Token); }
            catch (Exception) { return; }
            Interlocked.Increment(ref _connections);
            var server = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            client.NoDelay = true;
            try { await server.ConnectAsync(_upstream(), _stop.Token); }
            catch (Exception) { Reset(client); Reset(server); continue; }
            lock (_lock) { _open.Add(client); _open.Add(server); }
            _ = Task.Run(() => Pump(client, server, down: false));
            _ = Task.Run(() => Pump(server, client, down: true));
        }
    }

    private async Task Pump(Socket from, Socket to, bool down)
    {
        var buf = new byte[64 * 1024];
        try
        {
            while (true)
            {
                int n = await from.ReceiveAsync(buf, SocketFlags.None, _stop.Token);
                if (n == 0) { to.Shutdown(SocketShutdown.Send); return; }
                for (int off = 0; off < n;)
                    off += await to.SendAsync(buf.AsMemory(off, n - off), SocketFlags.None, _stop.Token);
                if (down) Count(n);
            }
        }
        catch (Exception)
        {
            Reset(from);
            Reset(to);
        }
    }

    private void Count(int n)
    {
        long total = Interlocked.Add(ref _down, n);
        int crossed = -1;
        Socket[] open = [];
        lock (_lock)
        {
            if (_next < _thresholds.Length && total >= _thresholds[_next])
            {
                crossed = _next++;
                if (_cut) { open = _open.ToArray(); _open.Clear(); }
            }
        }
        if (crossed < 0) return;
        foreach (var s in open) Reset(s);
        Crossed?.Invoke(crossed);
    }

    private static void Reset(Socket s)
    {
        try { s.LingerState = new LingerOption(true, 0); } catch (Exception) { }
        s.Dispose();
    }

    public void Dispose()
    {
        _stop.Cancel();
        _listener.Dispose();
        Socket[] open;
        lock (_lock) { open = _open.ToArray(); _open.Clear(); }
        foreach (var s in open) Reset(s);
    }
}
