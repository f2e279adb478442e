using System.Runtime.InteropServices;

namespace Crisp.Native;

/// <summary>
/// Raw libc entry points. Names and constants stay close to the C ones so the
/// man pages read straight onto the code. Callers go through <see cref="Errno.Check(long,string,string)"/>
/// rather than testing -1 themselves.
/// </summary>
public static unsafe partial class LibC
{
    private const string Lib = "libc";

    // ---- raw syscall numbers (x86_64) ----
    public const long SYS_read = 0, SYS_write = 1, SYS_open = 2, SYS_close = 3, SYS_lseek = 8, SYS_mmap = 9,
        SYS_mprotect = 10, SYS_munmap = 11, SYS_brk = 12, SYS_rt_sigaction = 13, SYS_rt_sigprocmask = 14,
        SYS_rt_sigreturn = 15, SYS_ioctl = 16, SYS_pread64 = 17, SYS_pwrite64 = 18, SYS_mremap = 25,
        SYS_madvise = 28, SYS_dup2 = 33, SYS_pause = 34, SYS_getpid = 39, SYS_socket = 41, SYS_sendmsg = 46,
        SYS_recvmsg = 47, SYS_clone = 56, SYS_fork = 57, SYS_exit = 60, SYS_wait4 = 61, SYS_kill = 62,
        SYS_fcntl = 72, SYS_ftruncate = 77, SYS_chdir = 80, SYS_fchdir = 81, SYS_umask = 95,
        SYS_getrlimit = 97, SYS_setuid = 105, SYS_setgid = 106, SYS_setpgid = 109, SYS_getppid = 110,
        SYS_setsid = 112, SYS_setreuid = 113, SYS_setregid = 114, SYS_setgroups = 116,
        SYS_setresuid = 117, SYS_setresgid = 119, SYS_getpgid = 121, SYS_setfsuid = 122, SYS_setfsgid = 123,
        SYS_getsid = 124, SYS_capset = 126, SYS_rt_sigpending = 127, SYS_rt_sigqueueinfo = 129,
        SYS_sigaltstack = 131, SYS_personality = 135, SYS_prctl = 157, SYS_arch_prctl = 158,
        SYS_setrlimit = 160, SYS_chroot = 161, SYS_gettid = 186, SYS_futex = 202,
        SYS_set_tid_address = 218, SYS_exit_group = 231, SYS_tgkill = 234, SYS_openat = 257,
        SYS_set_robust_list = 273, SYS_pipe2 = 293, SYS_rt_tgsigqueueinfo = 297, SYS_prlimit64 = 302,
        SYS_process_vm_readv = 310, SYS_process_vm_writev = 311, SYS_getrandom = 318, SYS_memfd_create = 319,
        SYS_userfaultfd = 323, SYS_rseq = 334, SYS_pidfd_send_signal = 424, SYS_pidfd_open = 434,
        SYS_clone3 = 435, SYS_close_range = 436, SYS_pidfd_getfd = 438, SYS_process_madvise = 440;

    [LibraryImport(Lib, EntryPoint = "syscall", SetLastError = true)]
    public static partial long syscall(long number, long a1, long a2, long a3, long a4, long a5, long a6);

    public static long Syscall(long number, long a1 = 0, long a2 = 0, long a3 = 0, long a4 = 0, long a5 = 0, long a6 = 0)
        => syscall(number, a1, a2, a3, a4, a5, a6);

    // ---- processes ----
    [LibraryImport(Lib, SetLastError = true)] public static partial int getpid();
    [LibraryImport(Lib, SetLastError = true)] public static partial int kill(int pid, int sig);
    [LibraryImport(Lib, SetLastError = true)] public static partial int waitpid(int pid, int* status, int options);
    [LibraryImport(Lib, SetLastError = true)] public static partial int waitid(int idtype, int id, void* infop, int options);
    [LibraryImport(Lib, SetLastError = true)] public static partial int prctl(int option, ulong a2, ulong a3, ulong a4, ulong a5);
    [LibraryImport(Lib, SetLastError = true)] public static partial int prlimit(int pid, int resource, RLimit* newLimit, RLimit* oldLimit);
    [LibraryImport(Lib, SetLastError = true)] public static partial int geteuid();
    [LibraryImport(Lib, SetLastError = true)] public static partial int setsid();

    public const int WNOHANG = 1, WUNTRACED = 2, WSTOPPED = 2, WEXITED = 4, WCONTINUED = 8, WNOWAIT = 0x01000000,
        __WNOTHREAD = 0x20000000, __WALL = 0x40000000, __WCLONE = unchecked((int)0x80000000);
    public const int P_PID = 1, P_PIDFD = 3;

    public static bool WIFEXITED(int s) => (s & 0x7f) == 0;
    public static int WEXITSTATUS(int s) => (s >> 8) & 0xff;
    public static bool WIFSIGNALED(int s) => ((s & 0x7f) + 1) >> 1 > 0 && (s & 0x7f) != 0x7f && (s & 0x7f) != 0;
    public static int WTERMSIG(int s) => s & 0x7f;
    public static bool WIFSTOPPED(int s) => (s & 0xff) == 0x7f;
    public static int WSTOPSIG(int s) => (s >> 8) & 0xff;
    /// <summary>The PTRACE_EVENT_* in a stop status (status >> 16).</summary>
    public static int WPTRACEEVENT(int s) => (s >> 16) & 0xff;

    // ---- signals ----
    public const int SIGHUP = 1, SIGINT = 2, SIGQUIT = 3, SIGILL = 4, SIGTRAP = 5, SIGABRT = 6, SIGBUS = 7,
        SIGFPE = 8, SIGKILL = 9, SIGUSR1 = 10, SIGSEGV = 11, SIGUSR2 = 12, SIGPIPE = 13, SIGALRM = 14,
        SIGTERM = 15, SIGCHLD = 17, SIGCONT = 18, SIGSTOP = 19, SIGTSTP = 20, SIGTTIN = 21, SIGTTOU = 22,
        SIGSYS = 31;

    // ---- memory ----
    public const int PROT_NONE = 0, PROT_READ = 1, PROT_WRITE = 2, PROT_EXEC = 4;
    public const int MAP_SHARED = 1, MAP_PRIVATE = 2, MAP_FIXED = 0x10, MAP_ANONYMOUS = 0x20,
        MAP_GROWSDOWN = 0x100, MAP_LOCKED = 0x2000, MAP_NORESERVE = 0x4000, MAP_POPULATE = 0x8000, MAP_STACK = 0x20000,
        MAP_HUGETLB = 0x40000, MAP_FIXED_NOREPLACE = 0x100000;
    public const int MREMAP_MAYMOVE = 1, MREMAP_FIXED = 2, MREMAP_DONTUNMAP = 4;
    public const int MADV_DONTNEED = 4, MADV_REMOVE = 9, MADV_DONTFORK = 10, MADV_DOFORK = 11,
        MADV_HUGEPAGE = 14, MADV_NOHUGEPAGE = 15, MADV_DONTDUMP = 16, MADV_WIPEONFORK = 18;

    [LibraryImport(Lib, SetLastError = true)] public static partial nint mmap(nint addr, nuint length, int prot, int flags, int fd, long offset);
    [LibraryImport(Lib, SetLastError = true)] public static partial int munmap(nint addr, nuint length);
    [LibraryImport(Lib, SetLastError = true)] public static partial int mprotect(nint addr, nuint length, int prot);
    [LibraryImport(Lib, SetLastError = true)] public static partial int madvise(nint addr, nuint length, int advice);

    public static readonly nint MAP_FAILED = -1;
    public const int PageSize = 4096;
    public const int PageShift = 12;

    // ---- process memory across address spaces ----
    [StructLayout(LayoutKind.Sequential)]
    public struct iovec
    {
        public nint iov_base;
        public nuint iov_len;
        public iovec(nint b, nuint l) { iov_base = b; iov_len = l; }
    }

    [LibraryImport(Lib, SetLastError = true)]
    public static partial nint process_vm_readv(int pid, iovec* local, nuint liovcnt, iovec* remote, nuint riovcnt, nuint flags);
    [LibraryImport(Lib, SetLastError = true)]
    public static partial nint process_vm_writev(int pid, iovec* local, nuint liovcnt, iovec* remote, nuint riovcnt, nuint flags);

    /// <summary>IOV_MAX: most iovecs one process_vm_readv takes.</summary>
    public const int IOV_MAX = 1024;

    // ---- files ----
    public const int O_RDONLY = 0, O_WRONLY = 1, O_RDWR = 2, O_ACCMODE = 3, O_CREAT = 0x40, O_EXCL = 0x80,
        O_NOCTTY = 0x100, O_TRUNC = 0x200, O_APPEND = 0x400, O_NONBLOCK = 0x800, O_DSYNC = 0x1000,
        O_DIRECT = 0x4000, O_LARGEFILE = 0x8000, O_DIRECTORY = 0x10000, O_NOFOLLOW = 0x20000,
        O_NOATIME = 0x40000, O_CLOEXEC = 0x80000, O_PATH = 0x200000;
    public const int F_DUPFD = 0, F_GETFD = 1, F_SETFD = 2, F_GETFL = 3, F_SETFL = 4, F_SETPIPE_SZ = 1031,
        F_GETPIPE_SZ = 1032, F_DUPFD_CLOEXEC = 1030, FD_CLOEXEC = 1;
    public const int SEEK_SET = 0, SEEK_CUR = 1, SEEK_END = 2;
    public const int FIONREAD = 0x541B;

    [LibraryImport(Lib, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int open(string path, int flags, int mode);
    [LibraryImport(Lib, SetLastError = true)] public static partial int close(int fd);
    [LibraryImport(Lib, SetLastError = true)] public static partial nint read(int fd, void* buf, nuint count);
    [LibraryImport(Lib, SetLastError = true)] public static partial nint write(int fd, void* buf, nuint count);
    [LibraryImport(Lib, SetLastError = true)] public static partial nint pread(int fd, void* buf, nuint count, long offset);
    [LibraryImport(Lib, SetLastError = true)] public static partial nint pwrite(int fd, void* buf, nuint count, long offset);
    [LibraryImport(Lib, SetLastError = true)] public static partial nint preadv(int fd, iovec* iov, int iovcnt, long offset);
    [LibraryImport(Lib, SetLastError = true)] public static partial nint pwritev(int fd, iovec* iov, int iovcnt, long offset);
    [LibraryImport(Lib, SetLastError = true)] public static partial long lseek(int fd, long offset, int whence);
    [LibraryImport(Lib, SetLastError = true)] public static partial int ioctl(int fd, ulong request, void* arg);
    [LibraryImport(Lib, SetLastError = true)] public static partial int fcntl(int fd, int cmd, long arg);
    [LibraryImport(Lib, SetLastError = true)] public static partial int pipe2(int* fds, int flags);
    [LibraryImport(Lib, SetLastError = true)] public static partial int dup(int fd);
    [LibraryImport(Lib, SetLastError = true)] public static partial int dup2(int fd, int fd2);
    [LibraryImport(Lib, SetLastError = true)] public static partial int ftruncate(int fd, long length);
    [LibraryImport(Lib, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int memfd_create(string name, uint flags);
    [LibraryImport(Lib, SetLastError = true)] public static partial int poll(PollFd* fds, nuint nfds, int timeout);

    [StructLayout(LayoutKind.Sequential)]
    public struct PollFd { public int fd; public short events; public short revents; }
    public const short POLLIN = 1, POLLPRI = 2, POLLOUT = 4, POLLERR = 8, POLLHUP = 0x10, POLLNVAL = 0x20;

    // ---- pidfd ----
    public static int pidfd_open(int pid, uint flags = 0) => (int)Syscall(SYS_pidfd_open, pid, flags);
    public static int pidfd_getfd(int pidfd, int targetfd, uint flags = 0) => (int)Syscall(SYS_pidfd_getfd, pidfd, targetfd, flags);

    // ---- rlimits ----
    [StructLayout(LayoutKind.Sequential)]
    public struct RLimit { public ulong rlim_cur; public ulong rlim_max; }
    public const int RLIM_NLIMITS = 16;
    public const ulong RLIM_INFINITY = ulong.MaxValue;

    // ---- prctl ----
    public const int PR_SET_PDEATHSIG = 1, PR_GET_PDEATHSIG = 2, PR_GET_DUMPABLE = 3, PR_SET_DUMPABLE = 4,
        PR_SET_NAME = 15, PR_GET_NAME = 16, PR_GET_SECCOMP = 21, PR_SET_SECCOMP = 22, PR_CAPBSET_READ = 23,
        PR_GET_SECUREBITS = 27, PR_SET_SECUREBITS = 28, PR_GET_TIMERSLACK = 30, PR_SET_MM = 35,
        PR_SET_CHILD_SUBREAPER = 36, PR_SET_NO_NEW_PRIVS = 38, PR_GET_NO_NEW_PRIVS = 39,
        PR_GET_TID_ADDRESS = 40, PR_GET_THP_DISABLE = 42, PR_SET_THP_DISABLE = 41;
    public const int PR_SET_MM_MAP = 14, PR_SET_MM_MAP_SIZE = 15, PR_SET_MM_EXE_FILE = 13;

    // ---- posix_spawn ----
    [LibraryImport(Lib, SetLastError = true)] public static partial int posix_spawn(int* pid, byte* path, void* fileActions, void* attr, byte** argv, byte** envp);
    [LibraryImport(Lib)] public static partial int posix_spawn_file_actions_init(void* fa);
    [LibraryImport(Lib)] public static partial int posix_spawn_file_actions_destroy(void* fa);
    [LibraryImport(Lib)] public static partial int posix_spawn_file_actions_adddup2(void* fa, int fd, int newfd);
    [LibraryImport(Lib)] public static partial int posix_spawn_file_actions_addclose(void* fa, int fd);
    [LibraryImport(Lib)] public static partial int posix_spawn_file_actions_addopen(void* fa, int fd, byte* path, int oflag, int mode);
    [LibraryImport(Lib)] public static partial int posix_spawnattr_init(void* attr);
    [LibraryImport(Lib)] public static partial int posix_spawnattr_destroy(void* attr);
    [LibraryImport(Lib)] public static partial int posix_spawnattr_setflags(void* attr, short flags);
    [LibraryImport(Lib)] public static partial int posix_spawnattr_setpgroup(void* attr, int pgroup);
    [LibraryImport(Lib)] public static partial int posix_spawnattr_setsigmask(void* attr, ulong* mask);
    [LibraryImport(Lib)] public static partial int posix_spawnattr_setsigdefault(void* attr, ulong* mask);
    public const short POSIX_SPAWN_RESETIDS = 1, POSIX_SPAWN_SETPGROUP = 2, POSIX_SPAWN_SETSIGDEF = 4,
        POSIX_SPAWN_SETSIGMASK = 8, POSIX_SPAWN_SETSID = 0x80;
}
