using System.Runtime.InteropServices;

namespace Crisp.Native;

/// <summary>Passing one file descriptor with a payload over a unix socket.</summary>
public static unsafe class FdPassing
{
    private const int CmsgSpace = 24; // CMSG_SPACE(sizeof(int)): 16-byte header + 4, aligned to 8

    /// <summary>Sends <paramref name="payload"/> with <paramref name="fd"/> attached (SCM_RIGHTS).</summary>
    public static void Send(int socket, ReadOnlySpan<byte> payload, int fd, string target)
    {
        byte* control = stackalloc byte[CmsgSpace];
        new Span<byte>(control, CmsgSpace).Clear();
        var cmsg = (LibC.cmsghdr*)control;
        cmsg->cmsg_len = 16 + sizeof(int);
        cmsg->cmsg_level = LibC.SOL_SOCKET;
        cmsg->cmsg_type = LibC.SCM_RIGHTS;
        *(int*)(control + 16) = fd;
        fixed (byte* p = payload)
        {
            var iov = new LibC.iovec((nint)p, (nuint)payload.Length);
            var msg = new LibC.msghdr { msg_iov = &iov, msg_iovlen = 1, msg_control = control, msg_controllen = CmsgSpace };
            Errno.Check(LibC.sendmsg(socket, &msg, LibC.MSG_NOSIGNAL), "sendmsg", target);
        }
    }

    /// <summary>
    /// Receives up to <paramref name="buffer"/>.Length bytes and, if one came with them, a
    /// descriptor (CLOEXEC); -1 when none. Returns the byte count (0 at end of stream).
    /// </summary>
    public static int Receive(int socket, Span<byte> buffer, out int fd, string target)
    {
        byte* control = stackalloc byte[CmsgSpace];
        new Span<byte>(control, CmsgSpace).Clear();
        fd = -1;
        fixed (byte* p = buffer)
        {
            var iov = new LibC.iovec((nint)p, (nuint)buffer.Length);
            var msg = new LibC.msghdr { msg_iov = &iov, msg_iovlen = 1, msg_control = control, msg_controllen = CmsgSpace };
            nint n = Errno.Check(LibC.recvmsg(socket, &msg, LibC.MSG_CMSG_CLOEXEC), "recvmsg", target);
            var cmsg = (LibC.cmsghdr*)control;
            if (msg.msg_controllen >= 16 + sizeof(int) && cmsg->cmsg_level == LibC.SOL_SOCKET && cmsg->cmsg_type == LibC.SCM_RIGHTS)
                fd = *(int*)(control + 16);
            return (int)n;
        }
    }
}
