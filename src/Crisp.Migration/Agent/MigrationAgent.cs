using System.Net;
using System.Net.Sockets;
using Crisp.Native;
using Crisp.PageServer.Transport;

namespace Crisp.Migration;

/// <summary>
/// <c>crisp agent --listen ADDR:PORT</c>: the destination of <see cref="MigrationSource"/>. Accepts
/// control connections and serves each migration (<see cref="AgentMigration"/>) on its own thread,
/// at most <see cref="MigrationAgentOptions.MaxConcurrent"/> at once (more wait in the listen
/// backlog), until <see cref="Run"/>'s token is cancelled. A stop drops every migration still being
/// received (its source resumes its tree: nothing ran here); those whose process already runs here
/// are finished before <see cref="Run"/> returns.
/// </summary>
public sealed class MigrationAgent : IDisposable
{
    private readonly MigrationAgentOptions _options;
    private readonly Socket _listener;
    private readonly string _baseDir;
    private int _served, _failed, _active;

    public MigrationAgent(MigrationAgentOptions options)
    {
        if (options.MaxConcurrent < 1) throw new ArgumentOutOfRangeException(nameof(options), "MaxConcurrent must be at least 1");
        _options = options;
        _baseDir = Path.GetFullPath(options.BaseDir ?? Path.GetTempPath());
        _listener = new Socket(options.Listen.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            _listener.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
            _listener.Bind(options.Listen);
            _listener.Listen(16);
        }
        catch
        {
            _listener.Dispose();
            throw;
        }
    }

    public IPEndPoint LocalEndPoint => (IPEndPoint)_listener.LocalEndPoint!;

    /// <summary>Migrations that ended (successfully or not), and of those, the ones that failed.</summary>
    public int Served => Volatile.Read(ref _served);
    public int Failed => Volatile.Read(ref _failed);
    /// <summary>Connections refused because they failed authentication (not counted in <see cref="Served"/>).</summary>
    public int Refused => Volatile.Read(ref _refused);
    private int _refused;
    /// <summary>Migrations being served right now.</summary>
    public int Active => Volatile.Read(ref _active);

    /// <summary>Fires after each migration (on its thread) with its source and, if it failed, why (null: it succeeded).</summary>
    public event Action<string, string?>? MigrationEnded;

    public void Run(CancellationToken stop)
    {
        using var slots = new SemaphoreSlim(_options.MaxConcurrent);
        var threads = new List<Thread>();
        while (!stop.IsCancellationRequested)
        {
            Socket client;
            try
            {
                slots.Wait(stop);
                client = _listener.AcceptAsync(stop).AsTask().GetAwaiter().GetResult();
            }
            catch (OperationCanceledException) { break; }
            client.NoDelay = true;
            threads.RemoveAll(t => !t.IsAlive);
            var thread = new Thread(() =>
            {
                try { Serve(client, stop); }
                finally { slots.Release(); }
            }) { Name = $"agent migration from {SafeRemote(client)}" };
            Interlocked.Increment(ref _active);
            thread.Start();
            threads.Add(thread);
        }
        foreach (var t in threads) t.Join();
        Log.I("agent: stopped");
    }

    private void Serve(Socket client, CancellationToken stop)
    {
        string from = SafeRemote(client);
        string? error = null;
        Stream stream;
        try
        {
            stream = _options.Transport.AcceptAsync(client, stop).GetAwaiter().GetResult();
        }
        catch (Exception e) when (e is PeerRefusedException or OperationCanceledException)
        {
            client.Dispose();
            error = e is PeerRefusedException ? $"refused: {e.Message}" : "the agent is stopping";
            Log.E($"agent: {from} refused before any image was read: {e.Message}");
            Interlocked.Increment(ref _refused);
            Interlocked.Decrement(ref _active);
            MigrationEnded?.Invoke(from, error);
            return;
        }
        try { new AgentMigration(new PageServerConnection(client, stream), _baseDir, _options.PeerTimeout, _options.Limits, _options.Transport.Tls, _options.ReconnectTimeout, _options.MoveAddressDevice).Serve(stop); }
        catch (Exception e)
        {
            error = e.Message;
            Interlocked.Increment(ref _failed);
            Log.E($"agent: migration from {from} failed: {e.Message}");
            Log.D(e.ToString());
        }
        Interlocked.Decrement(ref _active);
        Interlocked.Increment(ref _served);
        MigrationEnded?.Invoke(from, error);
    }

    private static string SafeRemote(Socket s)
    {
        try { return s.RemoteEndPoint?.ToString() ?? "?"; } catch (ObjectDisposedException) { return "?"; }
    }

    public void Dispose() => _listener.Dispose();
}
