using System.Buffers.Binary;
using Crisp.Checkpoint.Sockets;
using Crisp.Images.Proto;
using Crisp.Native;

namespace Crisp.Checkpoint.Restore;

/// <summary>
/// Netlink sockets, made by crisp like the others (RestoreSockets.cs) and handed to the processes
/// from <c>_c.CrispCopies</c>: bound to the dumped port id and groups (to a port the kernel picks if
/// that one is taken: port ids are usually the kernel's choice, as CRIU does), connected again.
/// </summary>
internal sealed unsafe partial class RestoreSession
{
    private void CreateOtherSockets()
    {
        foreach (var f in _c.Files.Values)
        {
            if (f.Type == FdTypes.Netlinksk && f.Nlsk != null) _c.CrispCopies[f.Id] = CreateNetlink(f.Nlsk);
            else if (f.Type == FdTypes.Packetsk && f.Psk != null) _c.CrispCopies[f.Id] = CreatePacket(f.Psk);
        }
    }

    private static byte[] NetlinkAddress(uint portId, uint groups)
    {
        var sa = new byte[12];   // struct sockaddr_nl
        BinaryPrimitives.WriteUInt16LittleEndian(sa, LibC.AF_NETLINK);
        BinaryPrimitives.WriteUInt32LittleEndian(sa.AsSpan(4), portId);
        BinaryPrimitives.WriteUInt32LittleEndian(sa.AsSpan(8), groups);
        return sa;
    }

    private static int CreateNetlink(NetlinkSkEntry e)
    {
        string target = $"netlink socket {e.Ino} (protocol {e.Protocol}, port {e.Portid})";
        int fd = Errno.Check(LibC.socket(LibC.AF_NETLINK, LibC.SOCK_RAW | LibC.SOCK_CLOEXEC | LibC.SOCK_NONBLOCK, (int)e.Protocol), "socket(AF_NETLINK)", target);
        try
        {
            SocketOptions.RestoreBeforeBind(fd, e.Opts, target);
            if (e.Portid != 0)
            {
                if (e.Groups.Count > 1) throw new CrispException($"{target} is in multicast groups above 32: not supported");
                uint groups = e.Groups.Count > 0 ? e.Groups[0] : 0;
                var sa = NetlinkAddress(e.Portid, groups);
                int rc;
                fixed (byte* a = sa) rc = LibC.bind(fd, a, (uint)sa.Length);
                if (rc != 0)
                {
                    if (Errno.Last != Errno.EADDRINUSE) throw Errno.Failure("bind", target);
                    Log.I($"{target}: port {e.Portid} is taken, bound to one the kernel picks (as CRIU does)");
                    sa = NetlinkAddress(0, groups);
                    fixed (byte* a = sa) Errno.Check(LibC.bind(fd, a, (uint)sa.Length), "bind", target);
                }
            }
            if (e.State == SocketDump.NETLINK_CONNECTED)
            {
                var sa = NetlinkAddress(e.DstPortid, e.DstGroup is > 0 and <= 32 ? 1u << (int)(e.DstGroup - 1) : 0);
                fixed (byte* a = sa) Errno.Check(LibC.connect(fd, a, (uint)sa.Length), $"connect(port {e.DstPortid}, group {e.DstGroup})", target);
            }
            SocketOptions.Restore(fd, e.Opts, target);
            FinishSocket(fd, e.Flags, e.Opts, target);
            return fd;
        }
        catch
        {
            LibC.close(fd);
            throw;
        }
    }
}
