using System.Net;
using System.Net.Sockets;
using Crisp.Native;

namespace Crisp.Migration;

/// <summary>
/// <c>crisp agent --listen ADDR:PORT</c>: the destination of <see cref="MigrationSource"/>. Accepts
/// control connections and serves each migration (<see cref="AgentMigration"/>) in turn until
/// <see cref="Run"/>'s token is cancelled. A stop drops a migration still being received (its
/// source resumes its tree: nothing ran here); one whose process already runs here is finished.
/// </summary>
public sealed class MigrationAgent : IDisposable
{
    private readonly MigrationAgentOptions _options;
    private readonly Socket _listener;
    private readonly string _baseDir;
    private int _served, _failed;

    public MigrationAgent(MigrationAgentOptions options)
    {
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

    /// <summary>Fires after each migration with its source and, if it failed, why (null: it succeeded).</summary>
    public event Action<string, string?>? MigrationEnded;

    public void Run(CancellationToken stop)
    {
        while (!stop.IsCancellationRequested)
        {
            Socket client;
            try { client = _listener.AcceptAsync(stop).AsTask().GetAwaiter().GetResult(); }
            catch (OperationCanceledException) { break; }
            client.NoDelay = true;
            string from = SafeRemote(client);
            string? error = null;
            try { new AgentMigration(client, _baseDir, _options.PeerTimeout).Serve(stop); }
            catch (Exception e)
            {
                error = e.Message;
                Interlocked.Increment(ref _failed);
                Log.E($"agent: migration from {from} failed: {e.Message}");
            }
            Interlocked.Increment(ref _served);
            MigrationEnded?.Invoke(from, error);
        }
        Log.I("agent: stopped");
    }

    private static string SafeRemote(Socket s)
    {
        try { return s.RemoteEndPoint?.ToString() ?? "?"; } catch (ObjectDisposedException) { return "?"; }
    }

    public void Dispose() => _listener.Dispose();
}
