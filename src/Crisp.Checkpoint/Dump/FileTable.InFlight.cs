using Crisp.Native;
using Crisp.Native.ProcFs;

namespace Crisp.Checkpoint.Dump;

/// <summary>
/// Files in flight: descriptors a process sent over a unix socket (SCM_RIGHTS) that the receiver
/// has not taken yet. They sit in the socket's receive queue, in no process's fd table, and often
/// nothing else holds them (the sender closed its fd right after sending: zdtm scm00).
///
/// Peeking at the queue (SocketDump.PeekQueue) installs them in crisp, so crisp holds the very
/// files. Each is then dumped like a descriptor of crisp itself, with the code every other fd
/// goes through: it is the same description as a process's fd when kcmp says so (one entry,
/// one id), otherwise it gets an entry of its own and no fdinfo, as in CRIU's images. The
/// packet's scm entry lists the ids; restore (Restore/RestoreInFlight.cs) opens the files and
/// sends them again with the data.
///
/// They are dumped once every process was collected, so that every fd of the tree is known to
/// match them against; an epoll in flight names its targets by the fd numbers of the process
/// whose queue held it (restore opens it there). A socket in flight may carry files in flight
/// of its own: those are found while it is dumped, and dumped in the next round.
/// </summary>
internal sealed partial class FileTable
{
    private readonly List<int> _filesInFlight = [];   // crisp's fds of files in flight, closed by CloseFilesInFlight
    private int _selfPidfd = -1;
    private int _epollTargetsOf;                      // while an in-flight file is dumped: the process its epoll targets are in

    /// <summary>Dumps the files in flight found so far (and those in flight inside them).</summary>
    private void DumpFilesInFlight()
    {
        int self = Environment.ProcessId;
        for (var pending = _sockets.TakeInFlight(); pending.Count > 0; pending = _sockets.TakeInFlight())
        {
            foreach (var m in pending) _filesInFlight.AddRange(m.Fds);
            foreach (var m in pending)
                foreach (int local in m.Fds)
                {
                    string where = $"a file passed with SCM_RIGHTS and not received yet, queued on {m.Queue}";
                    if (_selfPidfd < 0) _selfPidfd = Errno.Check(LibC.pidfd_open(self), "pidfd_open", "crisp itself");
                    var info = Proc.FdInfo(self, local);
                    if (FileLockLine.From(info).Count > 0)
                        throw new CrispException($"{where} holds a file lock: not supported yet");
                    _epollTargetsOf = m.Owner == self ? 0 : m.Owner;
                    try { m.Rights.Rights.Add(CollectFds(self, _selfPidfd, 0, [local])[0].Id); }
                    catch (CrispException e)
                    {
                        // The message names crisp's copy; the reader knows the file by where it was queued.
                        throw new CrispException($"{where}: {e.Message.Replace($"process {self}: fd {local}", "the file")}", e);
                    }
                    finally { _epollTargetsOf = 0; }
                }
        }
    }

    private void CloseFilesInFlight()
    {
        foreach (int fd in _filesInFlight) LibC.close(fd);
        _filesInFlight.Clear();
        foreach (var m in _sockets.TakeInFlight())
            foreach (int fd in m.Fds) LibC.close(fd);
        if (_selfPidfd >= 0) LibC.close(_selfPidfd);
        _selfPidfd = -1;
    }
}
