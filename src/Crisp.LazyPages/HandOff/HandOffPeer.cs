using System.Globalization;
using System.Net.Sockets;
using Crisp.Native;

namespace Crisp.LazyPages;

/*
 * Which process a hand-off names.
 *
 * The restorer sends each task's pid as it knows it (CRIU's hand-off): the pid in the restorer's
 * own pid namespace, which is the dumped pid. Besides naming the plan, the daemon uses the pid
 * for a pidfd (to see the process exit, upon which it closes the uffd) and for SIGKILL when pages
 * are lost. Both are right only if the number means the same process in the daemon's namespace.
 *
 * When the restorer runs in another pid namespace (`unshare --pid` around `crisp restore`, the way
 * a restore takes back a pid the source still holds), the same number here is another process:
 * often the dumped original itself, dead but not yet reaped. Its pidfd polls readable at once, so
 * the daemon believed the restored process had exited and closed the uffd; closing the last
 * reference unregisters every lazy range, and the restored process then read fresh zero pages
 * where its memory should have been (memtouch returned to address 0: SIGSEGV). With a live
 * stranger the damage waits for the stranger's exit, and a SIGKILL meant for the restored process
 * would hit the stranger.
 *
 * So the pid is translated. SO_PEERCRED gives the restorer's pid in the daemon's namespace (0 if
 * it is not visible here); /proc/PID/ns/pid says whether it shares the daemon's namespace. Same
 * namespace: the pid is used as is (the restored process holds it, so nothing else can). Another
 * namespace: the process that lives in the restorer's namespace with that pid (the last NSpid
 * entry) is looked up in /proc, and the pidfd's own fdinfo is checked after opening it, so a pid
 * recycled in between is not taken. Not found, or the restorer not visible: no pidfd (the exit
 * shows as ESRCH on the next fill) and no signal by number.
 *
 * The other way round: a restorer in our namespace that restored a tree into a new pid namespace
 * (crisp restore of a tree that owned one) names each process by its pid here, but the images and
 * the plan carry the pid the tree sees (its innermost NSpid). The plan is then looked up by that.
 */

/// <summary>The process at the other end of a hand-off connection: its pid here (0 if not visible) and its pid namespace (null if unknown).</summary>
internal readonly record struct RestorerPeer(int Pid, string? PidNamespace);

/// <summary>The restored process a hand-off pid names, as seen from the daemon's pid namespace.</summary>
/// <param name="Pid">its pid here, 0 if unknown (never signal it by number then)</param>
/// <param name="PidFd">a pidfd for it (CLOEXEC), or -1</param>
/// <param name="Note">why it differs from the hand-off pid or could not be found; null when they are the same process</param>
/// <param name="DumpedPid">when the process lives in a pid namespace below the restorer's: its pid there, which names its plan; 0 otherwise</param>
internal readonly record struct LocalProcess(int Pid, int PidFd, string? Note, int DumpedPid = 0);

internal static class HandOffPeer
{
    private const int SO_PEERCRED = 17;

    /// <summary>
    /// Who connected <paramref name="connection"/>. Taken at accept time: the restorer connects at the
    /// start of a restore and may be gone by the time its last hand-off message is read.
    /// </summary>
    public static RestorerPeer Peer(Socket connection)
    {
        Span<byte> ucred = stackalloc byte[12]; // struct ucred { pid_t pid; uid_t uid; gid_t gid; }
        int pid;
        try
        {
            pid = connection.GetRawSocketOption(LibC.SOL_SOCKET, SO_PEERCRED, ucred) >= 4 ? BitConverter.ToInt32(ucred) : 0;
        }
        catch (SocketException) { pid = 0; }
        return new(pid, pid > 0 ? PidNamespaceOf(pid.ToString(CultureInfo.InvariantCulture)) : null);
    }

    /// <summary>Finds the process that is <paramref name="handOffPid"/> in the pid namespace of <paramref name="restorer"/>.</summary>
    public static LocalProcess Resolve(int handOffPid, RestorerPeer restorer)
    {
        string? ours = PidNamespaceOf("self"), theirs = restorer.PidNamespace;
        if (theirs is null || ours is null)
            return new(0, -1, $"the restorer's pid namespace is unknown (its pid here: {restorer.Pid}): pid {handOffPid} is not looked up here");
        if (theirs == ours)
        {
            string? own = PidNamespaceOf(handOffPid.ToString(CultureInfo.InvariantCulture));
            if (own is not null && own != ours)
            {
                int inner = InnermostPid(ReadOrNull($"/proc/{handOffPid}/status"));
                int pfd = OpenPidFd(handOffPid, inner);
                // Not always the innermost: a task of a pid namespace nested in the tree (TreePidLevel.cs).
                int dumped = TreePidLevel.DumpedPid(handOffPid, restorer.Pid);
                return dumped == handOffPid ? new(handOffPid, pfd, null)
                    : new(handOffPid, pfd, $"pid {handOffPid} is pid {dumped} of the tree's pid namespace (its images' pid)", dumped);
            }
            int fd = OpenPidFd(handOffPid, handOffPid);
            return new(handOffPid, fd, null);
        }
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), NumberStyles.None, CultureInfo.InvariantCulture, out int local)) continue;
            if (PidNamespaceOf(Path.GetFileName(dir)) != theirs) continue;
            if (InnermostPid(ReadOrNull(Path.Combine(dir, "status"))) != handOffPid) continue;
            int fd = OpenPidFd(local, handOffPid);
            if (fd < 0) continue; // exited meanwhile, or its pid was recycled
            return new(local, fd, $"pid {handOffPid} of the restorer's pid namespace is {local} here");
        }
        return new(0, -1, $"pid {handOffPid} of the restorer's pid namespace ({theirs}) was not found from here");
    }

    /// <summary>
    /// pidfd_open(<paramref name="local"/>), kept only if the pidfd's process is, in its innermost
    /// namespace, <paramref name="expectedInner"/> (fdinfo describes the pidfd's own process, so a
    /// pid recycled since the caller looked is caught). -1 otherwise.
    /// </summary>
    private static int OpenPidFd(int local, int expectedInner)
    {
        int fd = LibC.pidfd_open(local);
        if (fd < 0) return -1;
        LibC.fcntl(fd, LibC.F_SETFD, LibC.FD_CLOEXEC);
        string? info = ReadOrNull($"/proc/self/fdinfo/{fd}");
        // Older kernels show no NSpid for a pidfd: then the /proc lookup the caller did stands.
        if (info is null || !info.Contains("NSpid:", StringComparison.Ordinal) || InnermostPid(info) == expectedInner)
            return fd;
        LibC.close(fd);
        return -1;
    }

    /// <summary>The last pid of the "NSpid:" line (the pid in the innermost namespace); 0 if none.</summary>
    internal static int InnermostPid(string? status)
    {
        if (status is null) return 0;
        int at = status.IndexOf("\nNSpid:", StringComparison.Ordinal);
        if (at < 0) return 0;
        int end = status.IndexOf('\n', at + 1);
        var ids = status[(at + 7)..(end < 0 ? status.Length : end)].Split(['\t', ' '], StringSplitOptions.RemoveEmptyEntries);
        return ids.Length > 0 && int.TryParse(ids[^1], NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out int pid) ? pid : 0;
    }

    private static string? PidNamespaceOf(string procEntry)
    {
        try { return new FileInfo($"/proc/{procEntry}/ns/pid").LinkTarget; }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return null; }
    }

    private static string? ReadOrNull(string path)
    {
        try { return File.ReadAllText(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return null; }
    }
}
