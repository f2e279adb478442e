using System.Runtime.InteropServices;
using System.Text;

namespace Crisp.Native;

/// <summary>
/// posix_spawn through P/Invoke. Never Process.Start for anything that will be
/// ptraced: .NET's SIGCHLD handling reaps and misreports stops of tracees.
/// </summary>
public static unsafe partial class ProcessSpawner
{
    // glibc: posix_spawn_file_actions_t is 80 bytes, posix_spawnattr_t 336; use generous buffers.
    private const int FileActionsSize = 256, AttrSize = 512;

    [LibraryImport("libc", EntryPoint = "posix_spawn_file_actions_addclosefrom_np")]
    private static partial int addclosefrom_np(void* fa, int from);

    /// <summary>Spawns the program and returns its pid. The caller owns the pid (waitpid it).</summary>
    public static int Spawn(SpawnOptions o)
    {
        var argv = o.Argv.Count == 0 ? new[] { o.Path } : o.Argv.ToArray();
        var envp = o.Envp?.ToArray() ?? [];
        var pinned = new List<nint>();
        try
        {
            byte* Str(string s)
            {
                int n = Encoding.UTF8.GetByteCount(s);
                var p = (byte*)NativeMemory.Alloc((nuint)n + 1);
                pinned.Add((nint)p);
                Encoding.UTF8.GetBytes(s, new Span<byte>(p, n));
                p[n] = 0;
                return p;
            }
            byte** Vec(string[] a)
            {
                var v = (byte**)NativeMemory.AllocZeroed((nuint)(a.Length + 1) * (nuint)sizeof(nint));
                pinned.Add((nint)v);
                for (int i = 0; i < a.Length; i++) v[i] = Str(a[i]);
                return v;
            }

            byte* fa = stackalloc byte[FileActionsSize];
            byte* attr = stackalloc byte[AttrSize];
            Check(LibC.posix_spawn_file_actions_init(fa), "posix_spawn_file_actions_init", o.Path);
            Check(LibC.posix_spawnattr_init(attr), "posix_spawnattr_init", o.Path);
            try
            {
                // Extra fds first dup'ed to high temporaries would be needed if they collided with 0..2;
                // callers pass child numbers >= 3, and we dup them after stdio.
                AddStd(fa, o.Stdin, 0, Str, o.Path);
                AddStd(fa, o.Stdout, 1, Str, o.Path);
                AddStd(fa, o.Stderr, 2, Str, o.Path);
                foreach (var (fd, childFd) in o.ExtraFds)
                {
                    if (childFd <= 2) throw new ArgumentException("extra fds must map to child fd >= 3");
                    if (o.KeepOpenFds.Contains(childFd)) throw new ArgumentException($"child fd {childFd} would overwrite a kept fd");
                    Check(LibC.posix_spawn_file_actions_adddup2(fa, fd, childFd), "posix_spawn_file_actions_adddup2", o.Path);
                }
                if (o.CloseOtherFds)
                {
                    // Close everything not asked for: the gaps below the highest kept fd, then all above.
                    var keep = new HashSet<int>(o.ExtraFds.Select(e => e.ChildFd).Concat(o.KeepOpenFds)) { 0, 1, 2 };
                    int top = keep.Max();
                    for (int fd = 3; fd < top; fd++)
                        if (!keep.Contains(fd) && IsOpen(fd))
                            Check(LibC.posix_spawn_file_actions_addclose(fa, fd), "posix_spawn_file_actions_addclose", o.Path);
                    Check(addclosefrom_np(fa, top + 1), "posix_spawn_file_actions_addclosefrom_np", o.Path);
                }
                short flags = 0;
                if (o.NewSession) flags |= LibC.POSIX_SPAWN_SETSID;
                if (o.ResetSignals)
                {
                    flags |= LibC.POSIX_SPAWN_SETSIGMASK | LibC.POSIX_SPAWN_SETSIGDEF;
                    // glibc's sigset_t is 128 bytes; only the first 64 bits name real signals.
                    ulong* empty = stackalloc ulong[16];
                    ulong* all = stackalloc ulong[16];
                    new Span<ulong>(empty, 16).Clear();
                    new Span<ulong>(all, 16).Clear();
                    all[0] = ~0UL;
                    Check(LibC.posix_spawnattr_setsigmask(attr, empty), "posix_spawnattr_setsigmask", o.Path);
                    Check(LibC.posix_spawnattr_setsigdefault(attr, all), "posix_spawnattr_setsigdefault", o.Path);
                }
                Check(LibC.posix_spawnattr_setflags(attr, flags), "posix_spawnattr_setflags", o.Path);

                int pid;
                int rc = LibC.posix_spawn(&pid, Str(o.Path), fa, attr, Vec(argv), Vec(envp));
                if (rc != 0) throw new SyscallException("posix_spawn", rc, o.Path);
                return pid;
            }
            finally
            {
                LibC.posix_spawn_file_actions_destroy(fa);
                LibC.posix_spawnattr_destroy(attr);
            }
        }
        finally
        {
            foreach (var p in pinned) NativeMemory.Free((void*)p);
        }
    }

    private delegate byte* StrFn(string s);

    private static void AddStd(void* fa, StdioSource? src, int target, StrFn str, string what)
    {
        if (src is not { } s) return;
        if (s.Fd >= 0)
            Check(LibC.posix_spawn_file_actions_adddup2(fa, s.Fd, target), "posix_spawn_file_actions_adddup2", what);
        else if (s.Path is not null)
            Check(LibC.posix_spawn_file_actions_addopen(fa, target, str(s.Path), s.Flags, 0x1a4), "posix_spawn_file_actions_addopen", what);
    }

    private static bool IsOpen(int fd) => LibC.fcntl(fd, LibC.F_GETFD, 0) != -1;

    private static void Check(int rc, string call, string target)
    {
        if (rc != 0) throw new SyscallException(call, rc, target);
    }

    /// <summary>waitpid for one specific pid, retrying on EINTR. Returns the raw status.</summary>
    public static int Wait(int pid, int options = 0)
    {
        int* status = stackalloc int[1];
        long r = Errno.CheckRetry(() => LibC.waitpid(pid, status, options), "waitpid", pid.ToString());
        return r == 0 ? -1 : *status; // 0: WNOHANG, nothing yet
    }
}
