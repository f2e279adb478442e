using Crisp.Checkpoint.Sockets;
using Crisp.Images;
using Crisp.Images.Proto;
using Crisp.Native;

namespace Crisp.Checkpoint.Restore;

/// <summary>
/// Queued data of unix sockets, and the files in flight in it: descriptors sent with SCM_RIGHTS
/// that nobody had received at dump time (Dump/FileTable.InFlight.cs). A queued packet's scm
/// entry names them by file id; they are sent again with the packet, from crisp's own fds.
///
/// A file in flight is opened the way any file is, inside a process: one that no process holds
/// gets a descriptor of its own (above every fd the images use) in a process holding the socket
/// whose queue it is in, as CRIU does; an epoll in flight names its targets by that process's
/// fds. Sockets need none: crisp made them all and keeps them (RestoreSockets.cs). So the unix
/// sockets whose queues carry files are made and handed to the processes first, and connected
/// and filled only once every process has its files; then crisp takes each file in flight from
/// a process holding it (pidfd_getfd), sends it, and closes the extra descriptors.
/// </summary>
internal sealed unsafe partial class RestoreSession
{

    /// <summary>Gives each file in flight that no process holds a descriptor in a process that can open it (before FindSharedFiles).</summary>
    private void NoteFilesInFlight()
    {
        if (!_c.Dir.Exists(ImageDir.SkQueuesName)) return;
        var held = _c.Procs.SelectMany(p => p.Fds).Select(f => f.Id).ToHashSet();
        var next = new Dictionary<ProcessImage, int>();
        foreach (var packet in _c.Dir.ReadSkQueues())
        {
            if (packet.Entry.Scm.Count > 1)
                throw new ImageException(_c.Dir.PathOf(ImageDir.SkQueuesName), $"a packet for file {packet.Entry.IdFor} has {packet.Entry.Scm.Count} scm entries (the kernel merges them into one)");
            foreach (var scm in packet.Entry.Scm)
            {
                if (scm.Type != LibC.SCM_RIGHTS)
                    throw new ImageException(_c.Dir.PathOf(ImageDir.SkQueuesName), $"a packet for file {packet.Entry.IdFor} has an scm entry of type {scm.Type}: only SCM_RIGHTS is known");
                foreach (uint id in scm.Rights)
                {
                    if (!_c.Files.TryGetValue(id, out var file))
                        throw new ImageException(_c.Dir.PathOf(ImageDir.FilesName), $"a file in flight to file {packet.Entry.IdFor} has id {id}, which has no entry");
                    if (file.Type is FdTypes.Unixsk or FdTypes.Inetsk || !held.Add(id)) continue;
                    // In a process that holds the receiving socket, with its own fd table.
                    var p = _c.Procs.FirstOrDefault(q => !SharesParentFdTable(q.DumpedPid) && q.Fds.Any(f => f.Id == packet.Entry.IdFor))
                            ?? _c.Procs[0];
                    if (!next.TryGetValue(p, out int fd)) fd = p.Fds.Select(f => (int)f.Fd).DefaultIfEmpty(2).Max() + 1;
                    next[p] = fd + 1;
                    p.Fds.Add(new FdinfoEntry { Id = id, Flags = LibC.FD_CLOEXEC, Type = file.Type, Fd = (uint)fd });
                    _c.InFlightFds.Add((p, fd));
                }
            }
        }
    }

    /// <summary>Once every process has its files: the unix sockets that waited are connected and filled, files in flight and all.</summary>
    private void SendFilesInFlight()
    {
        var r = _c.UnixLater!;
        _c.UnixLater = null;
        var taken = new Dictionary<uint, int>();
        int FileOf(uint id)
        {
            if (_c.CrispCopies.TryGetValue(id, out int fd) || taken.TryGetValue(id, out fd)) return fd;
            foreach (var p in _c.Procs)
                foreach (var fdi in p.Fds)
                    if (fdi.Id == id)
                        return taken[id] = TakeFd(_c.Tasks[p.Pid], (int)fdi.Fd);
            throw new ImageException(_c.Dir.PathOf(ImageDir.SkQueuesName), $"a file in flight has id {id}, which no process holds");
        }
        try
        {
            FinishUnix(r, FileOf);
            foreach (var (p, fd) in _c.InFlightFds)
                _c.Tasks[p.Pid].Check(Code, $"close(fd {fd}, a file in flight)", LibC.SYS_close, fd);
            _c.InFlightFds.Clear();
        }
        finally
        {
            DiscardUnix(r);
            foreach (var fd in taken.Values) LibC.close(fd);
        }
    }

    /// <summary>A socket's receive queue, written again by a socket that may send to it.</summary>
    private void RestoreUnixQueue(UnixSkEntry u, List<SkPacket> packets, UnixBatch r, Func<uint, int>? fileOf)
    {
        string target = Describe(u);
        var fds = r.Fds;
        var peer = u.Peer != 0 ? r.ByIno.GetValueOrDefault(u.Peer) : null;
        int sender;
        byte[]? to = null;
        int temp = -1;
        if (r.OtherEnds.TryGetValue(u.Ino, out int end)) sender = end;
        else if (peer != null && peer.Peer == u.Ino && peer.Ino != u.Ino && fds.TryGetValue(peer.Ino, out int pfd)) sender = pfd;
        else if (u.Type == LibC.SOCK_DGRAM && !u.Name.IsEmpty)
        {
            to = UnixAddress(u, r.Ghosts.GetValueOrDefault(u.Ino));
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
                var rights = p.Entry.Scm.SelectMany(s => s.Rights).ToList();
                if (rights.Count > 0 && fileOf == null)
                    throw new InvalidOperationException($"{target}: files in flight before the processes have their files");
                int[] passed = rights.Select(id => fileOf!(id)).ToArray();
                int off = 0;
                do
                {
                    // The files go with the first bytes (on a stream socket the kernel gives them with the
                    // first read that reaches this packet, as it did with the packet they came with).
                    nint n = SendPacket(sender, p.Data.AsSpan(off), to, off == 0 ? passed : []);
                    if (n < 0)
                        throw Errno.Failure("sendmsg", $"{p.Data.Length} queued bytes{(passed.Length > 0 ? $" and {passed.Length} file(s) in flight" : "")} for {target}");
                    off += (int)n;
                } while (off < p.Data.Length && u.Type == LibC.SOCK_STREAM);
            }
        }
        finally
        {
            if (temp >= 0) LibC.close(temp);
        }
    }

    private static nint SendPacket(int sender, ReadOnlySpan<byte> data, byte[]? to, int[] passed)
    {
        int controlLen = passed.Length == 0 ? 0 : (16 + 4 * passed.Length + 7) & ~7;   // CMSG_SPACE
        byte* control = stackalloc byte[Math.Max(controlLen, 8)];
        if (passed.Length > 0)
        {
            new Span<byte>(control, controlLen).Clear();
            var c = (LibC.cmsghdr*)control;
            c->cmsg_len = (nuint)(16 + 4 * passed.Length);
            c->cmsg_level = LibC.SOL_SOCKET;
            c->cmsg_type = LibC.SCM_RIGHTS;
            for (int i = 0; i < passed.Length; i++) ((int*)(control + 16))[i] = passed[i];
        }
        fixed (byte* d = data)
        fixed (byte* a = to)
        {
            var iov = new LibC.iovec((nint)d, (nuint)data.Length);
            var msg = new LibC.msghdr
            {
                msg_name = a, msg_namelen = to == null ? 0u : (uint)to.Length, msg_iov = &iov, msg_iovlen = 1,
                msg_control = passed.Length > 0 ? control : null, msg_controllen = (nuint)controlLen,
            };
            return LibC.sendmsg(sender, &msg, LibC.MSG_NOSIGNAL | LibC.MSG_DONTWAIT);
        }
    }
}
