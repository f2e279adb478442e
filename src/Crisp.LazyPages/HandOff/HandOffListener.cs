using System.Net.Sockets;
using Crisp.Native;

namespace Crisp.LazyPages;

/// <summary>
/// The daemon's end of the hand-off socket (the protocol is in Crisp.Native's LazyHandOff): the
/// listening socket and the restorers' connections, each with the restorer behind it
/// (HandOffPeer.cs). Used by the poll thread only.
/// </summary>
internal sealed class HandOffListener : IDisposable
{
    private readonly string _path;
    private Socket? _listener;
    private readonly List<Socket> _connections = new();
    private readonly Dictionary<Socket, RestorerPeer> _peers = new();

    public HandOffListener(string workDir) => _path = LazyHandOff.SocketPath(workDir);

    public string SocketPath => _path;
    public int ListenerFd => (int)_listener!.Handle;
    public int ConnectionCount => _connections.Count;

    public void Listen()
    {
        Directory.CreateDirectory(Path.GetDirectoryName(_path)!);
        // Bound and listening under a temporary name, then renamed: whoever sees the socket
        // file can connect to it (no window where it exists but refuses connections).
        string temp = _path + $".{Environment.ProcessId}.tmp";
        File.Delete(temp);
        _listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        _listener.Bind(new UnixDomainSocketEndPoint(temp));
        _listener.Listen(16);
        File.Move(temp, _path, overwrite: true);
        _listener.Blocking = false;
    }

    /// <summary>Every connection waiting to be accepted.</summary>
    public List<Socket> AcceptAll()
    {
        var accepted = new List<Socket>();
        while (true)
        {
            Socket c;
            try { c = _listener!.Accept(); }
            catch (SocketException e) when (e.SocketErrorCode == SocketError.WouldBlock) { return accepted; }
            c.Blocking = true;
            _connections.Add(c);
            _peers[c] = HandOffPeer.Peer(c);
            accepted.Add(c);
        }
    }

    public HandOffMessage Read(Socket c) => LazyHandOff.Receive((int)c.Handle, _path);

    /// <summary>The restorer behind a connection (taken at accept time).</summary>
    public RestorerPeer PeerOf(Socket c) => _peers.GetValueOrDefault(c);

    public void Close(Socket c)
    {
        _connections.Remove(c);
        _peers.Remove(c);
        c.Dispose();
    }

    /// <summary>Closes everything and removes the socket file.</summary>
    public void Dispose()
    {
        foreach (var c in _connections) c.Dispose();
        _connections.Clear();
        _peers.Clear();
        if (_listener is null) return;
        _listener.Dispose();
        _listener = null;
        try { File.Delete(_path); } catch (IOException) { }
    }
}
