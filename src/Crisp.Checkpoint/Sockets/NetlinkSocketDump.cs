using Crisp.Images.Proto;
using Crisp.Native;

namespace Crisp.Checkpoint.Sockets;

/// <summary>
/// Netlink sockets (netlink_sk_entry, as CRIU keeps them): protocol, the port id it is bound to,
/// the multicast groups it joined (32 at most, as CRIU), the port and group it is connected to.
/// netlink_diag tells them for bound and connected sockets; one it does not list was never bound
/// (the kernel binds on first send or connect), and only its protocol is kept.
///
/// Refused, naming the fd, as CRIU does: a socket with messages not read yet (they cannot be put
/// back), one in more than 32 groups, one in groups without a port id. Also refused: one with a
/// netlink option set (NETLINK_EXT_ACK, ...): CRIU's image has no place for them, and a restore
/// without them would answer the program differently.
/// </summary>
internal sealed partial class SocketDump
{
    private const int SOL_NETLINK = 270;
    public const uint NETLINK_CONNECTED = 1;

    private static readonly (int Opt, string Name)[] NetlinkFlags =
    [
        (3, "NETLINK_PKTINFO"), (4, "NETLINK_BROADCAST_ERROR"), (5, "NETLINK_NO_ENOBUFS"), (8, "NETLINK_LISTEN_ALL_NSID"),
        (10, "NETLINK_CAP_ACK"), (11, "NETLINK_EXT_ACK"), (12, "NETLINK_GET_STRICT_CHK"),
    ];

    private Dictionary<uint, SockDiag.NetlinkSocket>? _netlinkDiag;

    private unsafe FileEntry DumpNetlink(int local, uint id, int fileFlags, uint ino, int proto, string target)
    {
        string kind = $"a netlink socket (protocol {proto})";
        var pfd = new LibC.PollFd { fd = local, events = LibC.POLLIN };
        if (Errno.Check(LibC.poll(&pfd, 1, 0), "poll", target) > 0 && (pfd.revents & LibC.POLLIN) != 0)
            throw new CrispException($"{target} is {kind} with messages not read yet: not supported (CRIU refuses it too)");
        foreach (var (opt, name) in NetlinkFlags)
        {
            int v = 0;
            uint len = sizeof(int);
            if (LibC.getsockopt(local, SOL_NETLINK, opt, &v, &len) == 0 && v != 0)
                throw new CrispException($"{target} is {kind} with {name} set: not supported yet");
        }
        var e = new NetlinkSkEntry
        {
            Id = id, Ino = ino, Protocol = (uint)proto, State = 0, Flags = (uint)fileFlags, Portid = 0, DstPortid = 0, DstGroup = 0,
            Fown = NoOwner(), Opts = SocketOptions.Dump(local, target),
        };
        _netlinkDiag ??= SockDiag.NetlinkSockets();
        if (_netlinkDiag.TryGetValue(ino, out var d))
        {
            var groups = d.Groups.AsEnumerable().Reverse().SkipWhile(g => g == 0).Reverse().ToList();
            if (groups.Count > 1)
                throw new CrispException($"{target} is {kind} in multicast groups above 32: not supported (nor by CRIU)");
            if (groups.Count > 0 && d.PortId == 0)
                throw new CrispException($"{target} is {kind} in multicast groups without a port id: not supported (nor by CRIU)");
            e.Portid = d.PortId;
            e.Groups.AddRange(groups);
            e.State = (uint)d.State;
            e.DstPortid = d.DstPortId;
            e.DstGroup = d.DstGroup;
        }
        return new FileEntry { Type = FdTypes.Netlinksk, Id = id, Nlsk = e };
    }
}
