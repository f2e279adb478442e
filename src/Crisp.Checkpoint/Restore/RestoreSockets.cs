using System.Buffers.Binary;
using System.Text;
using Crisp.Checkpoint.Sockets;
using Crisp.Images;
using Crisp.Images.Proto;
using Crisp.Native;

namespace Crisp.Checkpoint.Restore;

/// <summary>
/// Sockets are made by crisp itself, in the tree's network namespace (crisp's, or the new one
/// RestoreNetns.cs made and the restore thread is in), before any process gets its files. Each one is then handed
/// to the processes that hold it exactly like a description shared between processes
/// (SharedFiles.cs): it sits in <c>_c.CrispCopies</c> under its file id, and every process takes
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

    /// <summary>
    /// The last steps of every socket kind: its file status flags, then its socket filter
    /// (after the other options: a filter could drop what they need).
    /// </summary>
    private static void FinishSocket(int fd, uint flags, SkOptsEntry opts, string target)
    {
        Errno.Check(LibC.fcntl(fd, LibC.F_SETFL, flags & (LibC.O_NONBLOCK | LibC.O_APPEND | FASYNC)), "fcntl(F_SETFL)", target);
        SocketOptions.RestoreFilter(fd, opts, target);
    }


    private static bool IsPing(InetSkEntry e) => e.Type == LibC.SOCK_DGRAM && e.Proto is SocketDump.IPPROTO_ICMP or SocketDump.IPPROTO_ICMPV6;

    private static bool IsConnection(InetSkEntry e) => e.Type == LibC.SOCK_STREAM && e.Proto == LibC.IPPROTO_TCP && e.DstPort != 0;

    private bool TcpClosed => _o.TcpClose || (_c.Inventory.HasTcpClose && _c.Inventory.TcpClose);

    private void CreateSockets()
    {
        var unix = _c.Files.Values.Where(f => f.Type == FdTypes.Unixsk && f.Usk != null).Select(f => f.Usk).ToList();
        var inet = _c.Files.Values.Where(f => f.Type == FdTypes.Inetsk && f.Isk != null).Select(f => f.Isk).ToList();
        CreateOtherSockets();
        if (unix.Count == 0 && inet.Count == 0) return;
        var connections = inet.Where(IsConnection).ToList();
        if (connections.Count > 0)
        {
            if (!_o.TcpEstablished && !TcpClosed)
                throw new CrispException($"the images hold {connections.Count} established TCP connection(s) ({Describe(connections[0])} first): " +
                                         "restore them with --tcp-established, or closed with --tcp-close");
            LockConnections(connections, makeNew: !TcpClosed);
        }
        var queues = _c.Dir.ReadSkQueues().GroupBy(p => p.Entry.IdFor).ToDictionary(g => g.Key, g => g.ToList());
        _c.ReuseLater.Clear();
        foreach (var i in inet) _c.CrispCopies[i.Id] = CreateInet(i);
        PutReuseBack();
        if (unix.Count > 0) CreateUnix(unix, queues);
    }

    // ---- unix ---------------------------------------------------------------------------------

    /// <summary>The unix sockets of the images while they are being made (crisp's fds and what is temporary).</summary>
    internal sealed class UnixBatch(List<UnixSkEntry> all, Dictionary<uint, List<SkPacket>> queues)
    {
        public Dictionary<uint, UnixSkEntry> ByIno { get; } = all.ToDictionary(u => u.Ino);
        public List<UnixSkEntry> Sockets { get; } = all.Where(u => (u.Uflags & SocketDump.USK_EXTERN) == 0).ToList();
        public Dictionary<uint, List<SkPacket>> Queues { get; } = queues;
        public Dictionary<uint, int> Fds { get; } = [];        // ino → crisp's fd (in _c.CrispCopies once HandedOver)
        public bool HandedOver { get; set; }
        public Dictionary<uint, int> OtherEnds { get; } = [];  // ino → the extra end of a pair whose peer was gone
        public Dictionary<uint, string> Ghosts { get; } = [];  // ino → where a socket whose file was deleted is bound meanwhile
        public List<string> MadeDirs { get; } = [];
    }


    private void CreateUnix(List<UnixSkEntry> all, Dictionary<uint, List<SkPacket>> queues)
    {
        UnixBatch? r = new(all, queues);
        try
        {
            MakeUnix(r);
            foreach (var u in r.Sockets) _c.CrispCopies[u.Id] = r.Fds[u.Ino];
            r.HandedOver = true;
            if (r.Queues.Values.Any(q => q.Any(p => p.Entry.Scm.Count > 0)))
            {
                // Connections and queues wait until the processes have their files: the files in flight are among them.
                _c.UnixLater = r;
                r = null;
                return;
            }
            FinishUnix(r, null);
        }
        finally
        {
            if (r != null) DiscardUnix(r);
        }
    }

    /// <summary>Step 1: every socket made, named, listening.</summary>
    private void MakeUnix(UnixBatch r)
    {
        var fds = r.Fds;
        foreach (var u in r.Sockets)
        {
            if (fds.ContainsKey(u.Ino)) continue;
            var peer = u.Peer != 0 && u.Peer != u.Ino ? r.ByIno.GetValueOrDefault(u.Peer) : null;
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
                r.OtherEnds[u.Ino] = b;
            }
            else if (u.Type == LibC.SOCK_DGRAM && u.Name.IsEmpty && r.Queues.ContainsKey(u.Id))
            {
                // Queued datagrams whose sender is gone, on a socket nobody can name: they come in
                // through the other end of a pair whose link is then cut from this side
                // (connect(AF_UNSPEC)), so this socket stays unconnected but the other end can send.
                var (a, b) = SocketPair(u);
                fds[u.Ino] = a;
                r.OtherEnds[u.Ino] = b;
                var unspec = new byte[2];
                fixed (byte* p = unspec)
                    Errno.Check(LibC.connect(a, p, 2), "connect(AF_UNSPEC)", Describe(u));
            }
            else
                fds[u.Ino] = Errno.Check(LibC.socket(LibC.AF_UNIX, (int)u.Type | LibC.SOCK_CLOEXEC | LibC.SOCK_NONBLOCK, 0),
                    $"socket(AF_UNIX, {SocketDump.TypeName((int)u.Type)})", Describe(u));
        }
        // Names whose file was deleted first: each is bound, then its file moved aside until every
        // socket that connects to it has, so that a live socket of the same name can be bound after it.
        foreach (var u in r.Sockets.OrderBy(u => u.Deleted ? 0 : 1))
        {
            PrepareUnix(fds[u.Ino], u, r.Ghosts, r.MadeDirs);
            if (u.State == LibC.TCP_LISTEN)
                Errno.Check(LibC.listen(fds[u.Ino], (int)u.Backlog), $"listen({u.Backlog})", Describe(u));
        }
    }

    /// <summary>
    /// Steps 2 and 3: connections, queued data (with the files in flight, crisp's fds by file id
    /// from <paramref name="fileOf"/>), shutdowns, flags; the temporary ends and names go.
    /// </summary>
    private void FinishUnix(UnixBatch r, Func<uint, int>? fileOf)
    {
        var fds = r.Fds;
        var queues = r.Queues;
        // Data that comes in through an extra end goes first: once this socket is connected
        // elsewhere, only its peer may send to it.
        foreach (var u in r.Sockets)
            if (r.OtherEnds.ContainsKey(u.Ino) && queues.TryGetValue(u.Id, out var early))
            {
                RestoreUnixQueue(u, early, r, fileOf);
                queues.Remove(u.Id);
            }
        foreach (var u in r.Sockets)
        {
            if (u.Peer == 0) continue;
            var peer = r.ByIno.GetValueOrDefault(u.Peer)
                ?? throw new ImageException(_c.Dir.PathOf(ImageDir.FilesName), $"unix socket {u.Ino}: its peer {u.Peer} has no entry");
            if (peer.Peer == u.Ino && peer.Ino != u.Ino && (peer.Uflags & SocketDump.USK_EXTERN) == 0) continue;   // a pair, connected already
            if ((peer.Uflags & SocketDump.USK_EXTERN) != 0 && !_o.ExtUnixSk)
                throw new CrispException($"{Describe(u)} was connected to {NameText(peer)} outside the dumped tree: restore it with --ext-unix-sk");
            var addr = UnixAddress(peer, r.Ghosts.GetValueOrDefault(peer.Ino));
            fixed (byte* a = addr)
                Errno.Check(LibC.connect(fds[u.Ino], a, (uint)addr.Length), $"connect({NameText(peer)})", Describe(u));
        }
        foreach (var u in r.Sockets)
        {
            if (!queues.TryGetValue(u.Id, out var packets)) continue;
            RestoreUnixQueue(u, packets, r, fileOf);
        }
        foreach (var end in r.OtherEnds.Values) LibC.close(end);
        r.OtherEnds.Clear();
        foreach (var u in r.Sockets)
        {
            int fd = fds[u.Ino];
            int how = (int)u.Shutdown;
            if (how != 0 && !(u.Peer == 0 && u.State == LibC.TCP_ESTABLISHED && u.Type != LibC.SOCK_DGRAM))
                Errno.Check(LibC.shutdown(fd, how - 1), $"shutdown({u.Shutdown})", Describe(u));
            FinishSocket(fd, u.Flags, u.Opts, Describe(u));
        }
        foreach (var path in r.Ghosts.Values) File.Delete(path);
        r.Ghosts.Clear();
        foreach (var dir in Enumerable.Reverse(r.MadeDirs)) Directory.Delete(dir);
        r.MadeDirs.Clear();
    }

    /// <summary>What a batch still holds goes (a failed restore, or the end of a successful one: then nothing is left).</summary>
    private static void DiscardUnix(UnixBatch r)
    {
        if (!r.HandedOver) foreach (var fd in r.Fds.Values) LibC.close(fd);
        r.Fds.Clear();
        foreach (var fd in r.OtherEnds.Values) LibC.close(fd);
        r.OtherEnds.Clear();
        foreach (var path in r.Ghosts.Values) try { File.Delete(path); } catch (IOException) { }
        r.Ghosts.Clear();
        foreach (var dir in Enumerable.Reverse(r.MadeDirs)) try { Directory.Delete(dir); } catch (IOException) { }
        r.MadeDirs.Clear();
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
        // A deleted socket's name may be another file's now (zdtm fifo_upon_unix_socket00: a FIFO made
        // where the socket was): that file steps aside while the socket is bound under the name it had.
        string? aside = null;
        if (path != null && u.Deleted && File.Exists(path))
        {
            aside = Path.Combine(Path.GetDirectoryName(path)!, $".crisp-aside-{u.Ino}");
            File.Move(path, aside);
        }
        try
        {
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
        }
        finally
        {
            if (aside != null) File.Move(aside, path!);
        }
        _c.SocketFiles.Add(path);
        if (u.FilePerms != null)
        {
            Errno.Check(LibC.chmod(path, u.FilePerms.Mode & 0xfff), "chmod", path);
            Errno.Check(LibC.lchown(path, u.FilePerms.Uid, u.FilePerms.Gid), "lchown", path);
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
        if (_c.UnixLater != null) DiscardUnix(_c.UnixLater);
        _c.UnixLater = null;
        foreach (var path in _c.SocketFiles)
            try { File.Delete(path); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        _c.SocketFiles.Clear();
    }

    // ---- inet ---------------------------------------------------------------------------------

    private static string Describe(InetSkEntry e)
    {
        int family = (int)e.Family;
        string s = $"{(family == LibC.AF_INET ? "IPv4" : "IPv6")} {SocketDump.ProtoName((int)e.Type, (int)e.Proto)} socket {e.Ino}";
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
        var method = _c.Inventory.HasNetworkLockMethod ? (NetworkLockMethod)_c.Inventory.NetworkLockMethod : NetworkLockMethod.Nftables;
        if (method == NetworkLockMethod.Skip) return;
        var conns = connections.Select(c => new TcpConnection((int)c.Family, c.SrcAddr.ToArray(), c.SrcPort, c.DstAddr.ToArray(), c.DstPort)).ToList();
        string runId = _c.Inventory.HasDumpCriuRunId ? _c.Inventory.DumpCriuRunId : $"{Environment.ProcessId}-restore";
        if (LockNetns(conns, method, runId, makeNew)) return;
        if (method == NetworkLockMethod.Iptables)
        {
            // The dump's rules where they are; those it did not leave here (another namespace) are made for the restore.
            var there = conns.Where(NetworkLock.IptablesLocked).ToList();
            _c.NetLock = NetworkLock.Existing(method, runId, there);
            if (makeNew) foreach (var c in conns.Except(there)) _c.NetLock.Add(c);
            return;
        }
        if (NetworkLock.TableExists(runId))
        {
            _c.NetLock = NetworkLock.Existing(method, runId, conns);
            return;
        }
        if (!makeNew) return;   // --tcp-close: nothing to protect, only the dump's lock to remove
        _c.NetLock = NetworkLock.ForRun(method, runId);
        foreach (var c in conns) _c.NetLock.Add(c);
    }

    private void FinishConnections()
    {
        foreach (var (fd, reuse, target) in _c.RepairedTcp) TcpRepairRestore.Finish(fd, reuse, target);
        _c.RepairedTcp.Clear();
    }

    private void UnlockNetwork()
    {
        var l = _c.NetLock!;
        _c.NetLock = null;
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
            if (family == LibC.AF_INET6 && e.HasV6Only && (e.V6Only || e.Type != LibC.SOCK_RAW))   // raw ones have no IPV6_V6ONLY to clear
                LibC.SetSockOptInt(fd, LibC.IPPROTO_IPV6, LibC.IPV6_V6ONLY, e.V6Only ? 1 : 0, target);
            if (e.IpOpts != null) SocketOptions.RestoreIp(fd, family, (int)e.Type, (int)e.Proto, e.IpOpts, target);
            bool anyAddr = e.SrcAddr.All(w => w == 0);
            bool connection = IsConnection(e);
            if (connection && !TcpClosed)
            {
                LibC.SetSockOptInt(fd, LibC.SOL_SOCKET, LibC.SO_REUSEADDR, 1, target);
                var stream = _c.Dir.ReadTcpStream(e.Ino);
                TcpRepairRestore.Restore(fd, e, stream, (port, addr) => InetAddress(family, port, addr), target);
                _c.RepairedTcp.Add((fd, e.Opts.Reuseaddr, target));
            }
            else if (connection)
            {
                // --tcp-close: a fresh socket, neither bound nor connected, shut down both ways (CRIU's):
                // reads give end of file, writes EPIPE, poll POLLHUP.
                if (LibC.shutdown(fd, LibC.SHUT_RDWR) != 0 && Errno.Last != Errno.ENOTCONN)
                    throw Errno.Failure("shutdown(SHUT_RDWR)", target);
            }
            else if ((e.SrcPort != 0 || !anyAddr) && !IsPing(e))
            {
                // (A ping socket is not bound again, as CRIU does: its port is the echo identifier, picked on first send.)
                // The address may be gone from this host, or have been bound with freebind turned off
                // afterwards (the kernel checks it only in bind): bind freely, then put the flag back.
                bool freebind = e.IpOpts?.Freebind ?? false;
                int level = family == LibC.AF_INET ? LibC.IPPROTO_IP : LibC.IPPROTO_IPV6;
                int opt = family == LibC.AF_INET ? LibC.IP_FREEBIND : LibC.IPV6_FREEBIND;
                LibC.SetSockOptInt(fd, level, opt, 1, target);
                // Sockets sharing a port (a closed twin, listeners with SO_REUSEPORT whose flag was
                // cleared later): bind with SO_REUSEADDR and SO_REUSEPORT as CRIU does; the program's
                // own values go back once every socket of the images is bound and listening.
                LibC.SetSockOptInt(fd, LibC.SOL_SOCKET, LibC.SO_REUSEADDR, 1, target);
                LibC.SetSockOptInt(fd, LibC.SOL_SOCKET, LibC.SO_REUSEPORT, 1, target);
                _c.ReuseLater.Add((fd, e.Opts.Reuseaddr, e.Opts.SoReuseport, target));
                var sa = InetAddress(family, e.SrcPort, e.SrcAddr);
                fixed (byte* a = sa) Errno.Check(LibC.bind(fd, a, (uint)sa.Length), "bind", target);
                if (!freebind) LibC.SetSockOptInt(fd, level, opt, 0, target);
            }
            if (e.State == LibC.TCP_LISTEN)
                Errno.Check(LibC.listen(fd, (int)e.Backlog), $"listen({e.Backlog})", target);
            if (e.Type != LibC.SOCK_STREAM && e.DstPort != 0)
            {
                var sa = InetAddress(family, e.DstPort, e.DstAddr);
                fixed (byte* a = sa) Errno.Check(LibC.connect(fd, a, (uint)sa.Length), "connect", target);
            }
            SocketOptions.Restore(fd, e.Opts, target);
            if (e.TcpOpts != null) SocketOptions.RestoreTcp(fd, e.TcpOpts, target);
            if (e.HasShutdown && e.Shutdown != SkShutdown.None)
            {
                int rc = LibC.shutdown(fd, (int)e.Shutdown - 1);
                if (rc != 0 && Errno.Last != Errno.ENOTCONN) throw Errno.Failure("shutdown", target);
            }
            FinishSocket(fd, e.Flags, e.Opts, target);
            return fd;
        }
        catch
        {
            _c.RepairedTcp.RemoveAll(r => r.Fd == fd);
            _c.ReuseLater.RemoveAll(r => r.Fd == fd);
            LibC.close(fd);
            throw;
        }
    }


    /// <summary>The dumped SO_REUSEADDR/SO_REUSEPORT of bound sockets, once all of them are bound (CRIU's post_open).</summary>
    private void PutReuseBack()
    {
        foreach (var (fd, addr, port, target) in _c.ReuseLater)
        {
            if (!addr) LibC.SetSockOptInt(fd, LibC.SOL_SOCKET, LibC.SO_REUSEADDR, 0, target);
            if (!port) LibC.SetSockOptInt(fd, LibC.SOL_SOCKET, LibC.SO_REUSEPORT, 0, target);
        }
        _c.ReuseLater.Clear();
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
