using System.Buffers.Binary;
using System.Text;
using Crisp.Checkpoint.Sockets;
using Crisp.Images;
using Crisp.Images.Proto;
using Crisp.Native;

namespace Crisp.Checkpoint.Restore;

/// <summary>
/// Sockets are made by crisp itself, in its own network namespace (the dumped tree's: crisp does
/// not restore network namespaces), before any process gets its files. Each one is then handed
/// to the processes that hold it exactly like a description shared between processes
/// (SharedFiles.cs): it sits in <c>_crispCopies</c> under its file id, and every process takes
/// it with pidfd_getfd, so dup'd and inherited descriptors stay one socket.
///
/// The order follows what the kernel allows:
///  1. make them: a pair of unix sockets that are each other's peer is one socketpair (and a
///     connected stream socket whose peer is gone is a socketpair whose other end is closed
///     after its data went in); the others are socket + bind (+ listen). Established stream
///     sockets are not bound again: their name is their listener's, in use (CRIU's rule).
///  2. connect the unix sockets whose peer does not point back (a datagram socket sending to a
///     bound one, a connection a listener had not accepted yet) to the peer's name.
///  3. queued data: a socket's receive queue is written by its peer (or, for a datagram socket
///     nobody is connected to, sent to its name from a temporary socket); then shutdowns, then
///     file status flags; names whose file had been deleted are unlinked last.
/// Every socket is made non-blocking until step 3, so no connect or write can hang the restore.
/// </summary>
internal sealed unsafe partial class RestoreSession
{
    private const int FASYNC = 0x2000;                 // O_ASYNC
    private readonly List<string> _socketFiles = [];   // paths bound by this restore, removed if it fails

    private InventoryEntry _inventory = null!;
    private readonly List<(int Fd, bool ReuseAddr, string Target)> _repairedTcp = [];   // connections in repair mode until the end
    private NetworkLock? _netLock;

    private static bool IsConnection(InetSkEntry e) => e.Proto == LibC.IPPROTO_TCP && e.DstPort != 0;

    private bool TcpClosed => _o.TcpClose || (_inventory.HasTcpClose && _inventory.TcpClose);

    private void CreateSockets()
    {
        var unix = _files.Values.Where(f => f.Type == FdTypes.Unixsk && f.Usk != null).Select(f => f.Usk).ToList();
        var inet = _files.Values.Where(f => f.Type == FdTypes.Inetsk && f.Isk != null).Select(f => f.Isk).ToList();
        if (unix.Count == 0 && inet.Count == 0) return;
        var connections = inet.Where(IsConnection).ToList();
        if (connections.Count > 0)
        {
            if (!_o.TcpEstablished && !TcpClosed)
                throw new CrispException($"the images hold {connections.Count} established TCP connection(s) ({Describe(connections[0])} first): " +
                                         "restore them with --tcp-established, or closed with --tcp-close");
            LockConnections(connections, makeNew: !TcpClosed);
        }
        var queues = _dir.ReadSkQueues().GroupBy(p => p.Entry.IdFor).ToDictionary(g => g.Key, g => g.ToList());
        foreach (var i in inet) _crispCopies[i.Id] = CreateInet(i);
        if (unix.Count > 0) CreateUnix(unix, queues);
    }

    // ---- unix ---------------------------------------------------------------------------------

    private void CreateUnix(List<UnixSkEntry> all, Dictionary<uint, List<SkPacket>> queues)
    {
        var byIno = all.ToDictionary(u => u.Ino);
        var sockets = all.Where(u => (u.Uflags & SocketDump.USK_EXTERN) == 0).ToList();
        var fds = new Dictionary<uint, int>();        // ino → crisp's fd
        var otherEnds = new Dictionary<uint, int>();  // ino → the extra end of a pair whose peer was gone
        var ghosts = new Dictionary<uint, string>();  // ino → where a socket whose file was deleted is bound meanwhile
        var madeDirs = new List<string>();
        try
        {
            foreach (var u in sockets)
            {
                if (fds.ContainsKey(u.Ino)) continue;
                var peer = u.Peer != 0 && u.Peer != u.Ino ? byIno.GetValueOrDefault(u.Peer) : null;
                if (peer != null && peer.Peer == u.Ino && (peer.Uflags & SocketDump.USK_EXTERN) == 0)
                {
                    var (a, b) = SocketPair(u);
                    fds[u.Ino] = a;
                    fds[peer.Ino] = b;
                }
                else if (u.Peer == 0 && u.State == LibC.TCP_ESTABLISHED && u.Type != LibC.SOCK_DGRAM)
                {
                    var (a, b) = SocketPair(u);
                    fds[u.Ino] = a;
                    otherEnds[u.Ino] = b;
                }
                else if (u.Type == LibC.SOCK_DGRAM && u.Name.IsEmpty && queues.ContainsKey(u.Id))
                {
                    // Queued datagrams whose sender is gone, on a socket nobody can name: they come in
                    // through the other end of a pair whose link is then cut from this side
                    // (connect(AF_UNSPEC)), so this socket stays unconnected but the other end can send.
                    var (a, b) = SocketPair(u);
                    var unspec = new byte[2];
                    fixed (byte* p = unspec)
                        Errno.Check(LibC.connect(a, p, 2), "connect(AF_UNSPEC)", Describe(u));
                    fds[u.Ino] = a;
                    otherEnds[u.Ino] = b;
                }
                else
                    fds[u.Ino] = Errno.Check(LibC.socket(LibC.AF_UNIX, (int)u.Type | LibC.SOCK_CLOEXEC | LibC.SOCK_NONBLOCK, 0),
                        $"socket(AF_UNIX, {SocketDump.TypeName((int)u.Type)})", Describe(u));
            }
            // Names whose file was deleted first: each is bound, then its file moved aside until every
            // socket that connects to it has, so that a live socket of the same name can be bound after it.
            foreach (var u in sockets.OrderBy(u => u.Deleted ? 0 : 1))
            {
                PrepareUnix(fds[u.Ino], u, ghosts, madeDirs);
                if (u.State == LibC.TCP_LISTEN)
                    Errno.Check(LibC.listen(fds[u.Ino], (int)u.Backlog), $"listen({u.Backlog})", Describe(u));
            }
            // Data that comes in through an extra end goes first: once this socket is connected
            // elsewhere, only its peer may send to it.
            foreach (var u in sockets)
                if (otherEnds.ContainsKey(u.Ino) && queues.TryGetValue(u.Id, out var early))
                {
                    RestoreUnixQueue(u, early, byIno, fds, otherEnds, ghosts);
                    queues.Remove(u.Id);
                }
            foreach (var u in sockets)
            {
                if (u.Peer == 0) continue;
                var peer = byIno.GetValueOrDefault(u.Peer)
                    ?? throw new ImageException(_dir.PathOf(ImageDir.FilesName), $"unix socket {u.Ino}: its peer {u.Peer} has no entry");
                if (peer.Peer == u.Ino && peer.Ino != u.Ino && (peer.Uflags & SocketDump.USK_EXTERN) == 0) continue;   // a pair, connected already
                if ((peer.Uflags & SocketDump.USK_EXTERN) != 0 && !_o.ExtUnixSk)
                    throw new CrispException($"{Describe(u)} was connected to {NameText(peer)} outside the dumped tree: restore it with --ext-unix-sk");
                var addr = UnixAddress(peer, ghosts.GetValueOrDefault(peer.Ino));
                fixed (byte* a = addr)
                    Errno.Check(LibC.connect(fds[u.Ino], a, (uint)addr.Length), $"connect({NameText(peer)})", Describe(u));
            }
            foreach (var u in sockets)
            {
                if (!queues.TryGetValue(u.Id, out var packets)) continue;
                RestoreUnixQueue(u, packets, byIno, fds, otherEnds, ghosts);
            }
            foreach (var end in otherEnds.Values) LibC.close(end);
            otherEnds.Clear();
            foreach (var u in sockets)
            {
                int fd = fds[u.Ino];
                int how = (int)u.Shutdown;
                if (how != 0 && !(u.Peer == 0 && u.State == LibC.TCP_ESTABLISHED && u.Type != LibC.SOCK_DGRAM))
                    Errno.Check(LibC.shutdown(fd, how - 1), $"shutdown({u.Shutdown})", Describe(u));
                Errno.Check(LibC.fcntl(fd, LibC.F_SETFL, u.Flags & (LibC.O_NONBLOCK | LibC.O_APPEND | FASYNC)), "fcntl(F_SETFL)", Describe(u));
                SocketOptions.RestoreFilter(fd, u.Opts, Describe(u));
            }
            foreach (var path in ghosts.Values) File.Delete(path);
            ghosts.Clear();
            foreach (var dir in Enumerable.Reverse(madeDirs)) Directory.Delete(dir);
            madeDirs.Clear();
            foreach (var u in sockets) _crispCopies[u.Id] = fds[u.Ino];
            fds.Clear();
        }
        finally
        {
            foreach (var fd in fds.Values) LibC.close(fd);
            foreach (var fd in otherEnds.Values) LibC.close(fd);
            foreach (var path in ghosts.Values) try { File.Delete(path); } catch (IOException) { }
            foreach (var dir in Enumerable.Reverse(madeDirs)) try { Directory.Delete(dir); } catch (IOException) { }
        }
    }

    private (int A, int B) SocketPair(UnixSkEntry u)
    {
        int* sv = stackalloc int[2];
        Errno.Check(LibC.socketpair(LibC.AF_UNIX, (int)u.Type | LibC.SOCK_CLOEXEC | LibC.SOCK_NONBLOCK, 0, sv),
            $"socketpair(AF_UNIX, {SocketDump.TypeName((int)u.Type)})", Describe(u));
        return (sv[0], sv[1]);
    }

    /// <summary>Options and name of a new unix socket (before any connect or data).</summary>
    private void PrepareUnix(int fd, UnixSkEntry u, Dictionary<uint, string> ghosts, List<string> madeDirs)
    {
        string target = Describe(u);
        SocketOptions.RestoreBeforeBind(fd, u.Opts, target);
        SocketOptions.Restore(fd, u.Opts, target);
        if (u.Name.IsEmpty || (u.Type != LibC.SOCK_DGRAM && u.State == LibC.TCP_ESTABLISHED)) return;
        string? path = u.Name[0] == 0 ? null : FullPath(u);
        if (path != null)
        {
            LibC.stat_t st;
            // The dumped socket's file is still there (its owner is gone): bind needs the name free.
            if (LibC.lstat(path, &st) == 0 && (st.st_mode & LibC.S_IFMT) == LibC.S_IFSOCK) File.Delete(path);
            // A deleted socket may have lived in a directory that is gone too: make it for the time of the restore.
            string? dir = Path.GetDirectoryName(path);
            var missing = new List<string>();
            for (var d = dir; d != null && u.Deleted && !Directory.Exists(d); d = Path.GetDirectoryName(d)) missing.Add(d);
            foreach (var d in Enumerable.Reverse(missing)) { Directory.CreateDirectory(d); madeDirs.Add(d); }
        }
        var addr = UnixAddress(u);
        fixed (byte* a = addr)
            Errno.Check(LibC.bind(fd, a, (uint)addr.Length), $"bind({NameText(u)})", target);
        if (path == null) return;
        if (u.Deleted)
        {
            string ghost = Path.Combine(Path.GetDirectoryName(path)!, $".crisp-ghost-{u.Ino}");
            File.Move(path, ghost, overwrite: true);
            ghosts[u.Ino] = ghost;
            return;
        }
        _socketFiles.Add(path);
        if (u.FilePerms != null)
        {
            Errno.Check(LibC.chmod(path, u.FilePerms.Mode & 0xfff), "chmod", path);
            Errno.Check(LibC.lchown(path, u.FilePerms.Uid, u.FilePerms.Gid), "lchown", path);
        }
    }

    private void RestoreUnixQueue(UnixSkEntry u, List<SkPacket> packets, Dictionary<uint, UnixSkEntry> byIno,
        Dictionary<uint, int> fds, Dictionary<uint, int> otherEnds, Dictionary<uint, string> ghosts)
    {
        string target = Describe(u);
        var peer = u.Peer != 0 ? byIno.GetValueOrDefault(u.Peer) : null;
        int sender;
        byte[]? to = null;
        int temp = -1;
        if (otherEnds.TryGetValue(u.Ino, out int end)) sender = end;
        else if (peer != null && peer.Peer == u.Ino && peer.Ino != u.Ino && fds.TryGetValue(peer.Ino, out int pfd)) sender = pfd;
        else if (u.Type == LibC.SOCK_DGRAM && !u.Name.IsEmpty)
        {
            to = UnixAddress(u, ghosts.GetValueOrDefault(u.Ino));
            // Only its peer may send to a connected datagram socket; anyone may send to an unconnected one.
            if (peer != null && fds.TryGetValue(peer.Ino, out int connectedTo)) sender = connectedTo;
            else sender = temp = Errno.Check(LibC.socket(LibC.AF_UNIX, LibC.SOCK_DGRAM | LibC.SOCK_CLOEXEC | LibC.SOCK_NONBLOCK, 0),
                "socket(AF_UNIX, datagram)", $"queued data of {target}");
        }
        else throw new CrispException($"{target} has queued data but no peer that could send it again");
        try
        {
            if (temp >= 0) LibC.SetSockOptInt(temp, LibC.SOL_SOCKET, LibC.SO_SNDBUFFORCE, 16 << 20, target);
            foreach (var p in packets)
            {
                int off = 0;
                do
                {
                    nint n;
                    fixed (byte* d = p.Data)
                    fixed (byte* a = to)
                        n = LibC.sendto(sender, d + off, (nuint)(p.Data.Length - off), LibC.MSG_NOSIGNAL | LibC.MSG_DONTWAIT,
                            a, to == null ? 0u : (uint)to.Length);
                    if (n < 0)
                        throw new SyscallException("sendto", Errno.Last, $"{p.Data.Length} queued bytes for {target}");
                    off += (int)n;
                } while (off < p.Data.Length && u.Type == LibC.SOCK_STREAM);
            }
        }
        finally
        {
            if (temp >= 0) LibC.close(temp);
        }
    }

    private static string FullPath(UnixSkEntry u)
    {
        string name = u.Name.ToStringUtf8();
        return name.StartsWith('/') || !u.HasNameDir ? name : Path.Combine(u.NameDir, name);
    }

    /// <summary>sockaddr_un for the entry's name: abstract names as they are, paths made absolute.</summary>
    private static byte[] UnixAddress(UnixSkEntry u, string? boundAt = null)
    {
        byte[] name = u.Name[0] == 0 ? u.Name.ToByteArray() : Encoding.UTF8.GetBytes((boundAt ?? FullPath(u)) + "\0");
        if (name.Length > 108)
            throw new CrispException($"unix socket name {NameText(u)} does not fit in sockaddr_un once made absolute ({name.Length} bytes)");
        var addr = new byte[2 + name.Length];
        BinaryPrimitives.WriteUInt16LittleEndian(addr, LibC.AF_UNIX);
        name.CopyTo(addr, 2);
        return addr;
    }

    private static string NameText(UnixSkEntry u) =>
        u.Name.IsEmpty ? "(no name)" : u.Name[0] == 0 ? "@" + Encoding.UTF8.GetString(u.Name.Span[1..]) : FullPath(u);

    private static string Describe(UnixSkEntry u) =>
        $"unix {SocketDump.TypeName((int)u.Type)} socket {u.Ino}" + (u.Name.IsEmpty ? "" : $" ({NameText(u)})");

    /// <summary>After a failed restore: the socket files it bound go too.</summary>
    private void RemoveSocketFiles()
    {
        foreach (var path in _socketFiles)
            try { File.Delete(path); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        _socketFiles.Clear();
    }

    // ---- inet ---------------------------------------------------------------------------------

    private static string Describe(InetSkEntry e)
    {
        int family = (int)e.Family;
        string s = $"{(family == LibC.AF_INET ? "IPv4" : "IPv6")} {(e.Proto == LibC.IPPROTO_TCP ? "TCP" : "UDP")} socket {e.Ino}";
        return IsConnection(e)
            ? s + $" ({NetworkLock.Format(family, e.SrcAddr.ToArray())}:{e.SrcPort} → {NetworkLock.Format(family, e.DstAddr.ToArray())}:{e.DstPort})"
            : s + $" (port {e.SrcPort})";
    }

    /// <summary>
    /// The lock the dump left (same host: its nftables table is there, or its iptables rules), or
    /// a new one under the dump's run id (another host or namespace): from before the sockets exist
    /// until the restored tree runs, nothing of these connections gets through (NetworkLock.cs).
    /// </summary>
    private void LockConnections(List<InetSkEntry> connections, bool makeNew)
    {
        var method = _inventory.HasNetworkLockMethod ? (NetworkLockMethod)_inventory.NetworkLockMethod : NetworkLockMethod.Nftables;
        if (method == NetworkLockMethod.Skip) return;
        var conns = connections.Select(c => new TcpConnection((int)c.Family, c.SrcAddr.ToArray(), c.SrcPort, c.DstAddr.ToArray(), c.DstPort)).ToList();
        string runId = _inventory.HasDumpCriuRunId ? _inventory.DumpCriuRunId : $"{Environment.ProcessId}-restore";
        if (method == NetworkLockMethod.Iptables)
        {
            // The dump's rules where they are; those it did not leave here (another namespace) are made for the restore.
            var there = conns.Where(NetworkLock.IptablesLocked).ToList();
            _netLock = NetworkLock.Existing(method, runId, there);
            if (makeNew) foreach (var c in conns.Except(there)) _netLock.Add(c);
            return;
        }
        if (NetworkLock.TableExists(runId))
        {
            _netLock = NetworkLock.Existing(method, runId, conns);
            return;
        }
        if (!makeNew) return;   // --tcp-close: nothing to protect, only the dump's lock to remove
        _netLock = NetworkLock.ForRun(method, runId);
        foreach (var c in conns) _netLock.Add(c);
    }

    private void FinishConnections()
    {
        foreach (var (fd, reuse, target) in _repairedTcp) TcpRepairRestore.Finish(fd, reuse, target);
        _repairedTcp.Clear();
    }

    private void UnlockNetwork()
    {
        var l = _netLock!;
        _netLock = null;
        if (!l.Release()) throw new CrispException("the restored tree runs, but the network lock could not be removed (see the error above)");
    }

    private int CreateInet(InetSkEntry e)
    {
        int family = (int)e.Family;
        string target = Describe(e);
        int fd = Errno.Check(LibC.socket(family, (int)e.Type | LibC.SOCK_CLOEXEC | LibC.SOCK_NONBLOCK, (int)e.Proto), "socket", target);
        try
        {
            SocketOptions.RestoreBeforeBind(fd, e.Opts, target);
            if (family == LibC.AF_INET6 && e.HasV6Only)
                LibC.SetSockOptInt(fd, LibC.IPPROTO_IPV6, LibC.IPV6_V6ONLY, e.V6Only ? 1 : 0, target);
            if (e.IpOpts != null) SocketOptions.RestoreIp(fd, family, e.IpOpts, target);
            bool anyAddr = e.SrcAddr.All(w => w == 0);
            bool connection = IsConnection(e);
            if (connection && !TcpClosed)
            {
                LibC.SetSockOptInt(fd, LibC.SOL_SOCKET, LibC.SO_REUSEADDR, 1, target);
                var stream = _dir.ReadTcpStream(e.Ino);
                TcpRepairRestore.Restore(fd, e, stream, (port, addr) => InetAddress(family, port, addr), target);
                _repairedTcp.Add((fd, e.Opts.Reuseaddr, target));
            }
            else if (connection)
            {
                // --tcp-close: a fresh socket, neither bound nor connected, shut down both ways (CRIU's):
                // reads give end of file, writes EPIPE, poll POLLHUP.
                if (LibC.shutdown(fd, LibC.SHUT_RDWR) != 0 && Errno.Last != Errno.ENOTCONN)
                    throw new SyscallException("shutdown(SHUT_RDWR)", Errno.Last, target);
            }
            else if (e.SrcPort != 0 || !anyAddr)
            {
                // The address may be gone from this host, or have been bound with freebind turned off
                // afterwards (the kernel checks it only in bind): bind freely, then put the flag back.
                bool freebind = e.IpOpts?.Freebind ?? false;
                int level = family == LibC.AF_INET ? LibC.IPPROTO_IP : LibC.IPPROTO_IPV6;
                int opt = family == LibC.AF_INET ? LibC.IP_FREEBIND : LibC.IPV6_FREEBIND;
                LibC.SetSockOptInt(fd, level, opt, 1, target);
                // A port the dumped connection's TIME_WAIT (or a closed twin) still holds: bind with
                // SO_REUSEADDR as CRIU does, then put the program's own value back.
                LibC.SetSockOptInt(fd, LibC.SOL_SOCKET, LibC.SO_REUSEADDR, 1, target);
                var sa = InetAddress(family, e.SrcPort, e.SrcAddr);
                fixed (byte* a = sa) Errno.Check(LibC.bind(fd, a, (uint)sa.Length), "bind", target);
                if (!freebind) LibC.SetSockOptInt(fd, level, opt, 0, target);
                if (!e.Opts.Reuseaddr && e.State != LibC.TCP_LISTEN) LibC.SetSockOptInt(fd, LibC.SOL_SOCKET, LibC.SO_REUSEADDR, 0, target);
            }
            if (e.State == LibC.TCP_LISTEN)
            {
                Errno.Check(LibC.listen(fd, (int)e.Backlog), $"listen({e.Backlog})", target);
                if (!e.Opts.Reuseaddr) LibC.SetSockOptInt(fd, LibC.SOL_SOCKET, LibC.SO_REUSEADDR, 0, target);
            }
            if (e.Proto == LibC.IPPROTO_UDP && e.DstPort != 0)
            {
                var sa = InetAddress(family, e.DstPort, e.DstAddr);
                fixed (byte* a = sa) Errno.Check(LibC.connect(fd, a, (uint)sa.Length), "connect", target);
            }
            SocketOptions.Restore(fd, e.Opts, target);
            if (e.TcpOpts != null) SocketOptions.RestoreTcp(fd, e.TcpOpts, target);
            if (e.HasShutdown && e.Shutdown != SkShutdown.None)
            {
                int rc = LibC.shutdown(fd, (int)e.Shutdown - 1);
                if (rc != 0 && Errno.Last != Errno.ENOTCONN) throw new SyscallException("shutdown", Errno.Last, target);
            }
            Errno.Check(LibC.fcntl(fd, LibC.F_SETFL, e.Flags & (LibC.O_NONBLOCK | LibC.O_APPEND | FASYNC)), "fcntl(F_SETFL)", target);
            SocketOptions.RestoreFilter(fd, e.Opts, target);
            return fd;
        }
        catch
        {
            _repairedTcp.RemoveAll(r => r.Fd == fd);
            LibC.close(fd);
            throw;
        }
    }

    private static byte[] InetAddress(int family, uint port, IList<uint> words)
    {
        var sa = new byte[family == LibC.AF_INET ? 16 : 28];
        BinaryPrimitives.WriteUInt16LittleEndian(sa, (ushort)family);
        BinaryPrimitives.WriteUInt16BigEndian(sa.AsSpan(2), (ushort)port);
        int at = family == LibC.AF_INET ? 4 : 8;
        for (int i = 0; i < words.Count && i < (family == LibC.AF_INET ? 1 : 4); i++)
            BinaryPrimitives.WriteUInt32LittleEndian(sa.AsSpan(at + 4 * i), words[i]);
        return sa;
    }
}
