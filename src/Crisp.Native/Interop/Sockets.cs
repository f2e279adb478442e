using System.Runtime.InteropServices;

namespace Crisp.Native;

/// <summary>
/// sendmsg/recvmsg with SCM_RIGHTS. .NET sockets cannot carry file descriptors,
/// so these run on the raw socket handle.
/// </summary>
public static unsafe partial class LibC
{
    public const int SOL_SOCKET = 1, SCM_RIGHTS = 1, MSG_NOSIGNAL = 0x4000, MSG_CMSG_CLOEXEC = 0x40000000,
        MSG_WAITALL = 0x100;

    [StructLayout(LayoutKind.Sequential)]
    public struct msghdr
    {
        public void* msg_name;
        public uint msg_namelen;
        public iovec* msg_iov;
        public nuint msg_iovlen;
        public void* msg_control;
        public nuint msg_controllen;
        public int msg_flags;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct cmsghdr { public nuint cmsg_len; public int cmsg_level; public int cmsg_type; }

    [LibraryImport(Lib, SetLastError = true)] public static partial nint sendmsg(int sockfd, msghdr* msg, int flags);
    [LibraryImport(Lib, SetLastError = true)] public static partial nint recvmsg(int sockfd, msghdr* msg, int flags);
}
