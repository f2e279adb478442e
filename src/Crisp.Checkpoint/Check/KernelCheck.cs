using System.Runtime.InteropServices;
using Crisp.Native;

namespace Crisp.Checkpoint.Check;

/// <summary>
/// What `crisp check` asks the kernel, like `criu check`: each probe makes the real call
/// and records the answer; <see cref="Evaluate"/> turns the raw answers into a verdict.
/// The probes are kept apart from the verdict so the verdict can be tested on any answers.
/// </summary>
public static unsafe class KernelCheck
{
    /// <summary>The raw answers of the kernel to crisp's probes.</summary>
    public sealed record Answers
    {
        public bool IsRoot { get; init; }
        public ulong CapEff { get; init; }
        public int PtraceScope { get; init; }
        public int PidfdGetfdErrno { get; init; }
        public int UserfaultfdSyscallErrno { get; init; }
        public bool DevUserfaultfdExists { get; init; }
        public int DevUserfaultfdErrno { get; init; }
        public ulong UffdFeatures { get; init; }
        public int PagemapScanErrno { get; init; }
        public int MemfdErrno { get; init; }
        public string KernelRelease { get; init; } = "";
    }

    public const int CAP_SYS_PTRACE = 19, CAP_SYS_ADMIN = 21, CAP_SYS_RESOURCE = 24, CAP_CHECKPOINT_RESTORE = 40;

    /// <summary>The uffd features lazy restore asks for at UFFDIO_API time.</summary>
    public const ulong LazyFeatures = LibC.UFFD_FEATURE_EVENT_FORK | LibC.UFFD_FEATURE_EVENT_REMAP
        | LibC.UFFD_FEATURE_EVENT_REMOVE | LibC.UFFD_FEATURE_EVENT_UNMAP;

    public static IReadOnlyList<KernelFeature> Evaluate(Answers a)
    {
        bool Cap(int bit) => (a.CapEff & (1UL << bit)) != 0;
        string Err(int e) => e == 0 ? "ok" : Errno.Name(e);
        var list = new List<KernelFeature>
        {
            new("root", a.IsRoot, a.IsRoot ? "running as root" : "not running as root", "all commands"),
            new("CAP_SYS_PTRACE", Cap(CAP_SYS_PTRACE), "effective capability", "dump, restore"),
            new("CAP_SYS_ADMIN", Cap(CAP_SYS_ADMIN), "effective capability (PR_SET_MM_MAP, mapping files)", "restore"),
            new("CAP_CHECKPOINT_RESTORE", Cap(CAP_CHECKPOINT_RESTORE) || Cap(CAP_SYS_ADMIN),
                "clone3 with set_tid (restore the original PID)", "restore"),
            new("ptrace", a.PtraceScope <= 1 || Cap(CAP_SYS_PTRACE),
                $"kernel.yama.ptrace_scope = {a.PtraceScope}", "dump, restore"),
            new("pidfd_getfd", a.PidfdGetfdErrno == 0, Err(a.PidfdGetfdErrno), "restore --lazy-pages"),
            new("userfaultfd", a.UserfaultfdSyscallErrno == 0 || (a.DevUserfaultfdExists && a.DevUserfaultfdErrno == 0),
                $"syscall: {Err(a.UserfaultfdSyscallErrno)}; /dev/userfaultfd: {(a.DevUserfaultfdExists ? Err(a.DevUserfaultfdErrno) : "absent")}",
                "restore --lazy-pages, lazy-pages, migrate"),
            new("uffd non-cooperative events", (a.UffdFeatures & LazyFeatures) == LazyFeatures,
                $"features 0x{a.UffdFeatures:x} (need FORK, REMAP, REMOVE, UNMAP)", "restore --lazy-pages, migrate"),
            new("uffd poison", (a.UffdFeatures & LibC.UFFD_FEATURE_POISON) != 0,
                "UFFDIO_POISON: SIGBUS instead of a hang when pages are lost", "lazy-pages"),
            new("uffd write-protect (async)", (a.UffdFeatures & LibC.UFFD_FEATURE_WP_ASYNC) != 0,
                "UFFD_FEATURE_WP_ASYNC: dirty tracking without soft-dirty", "pre-copy dirty tracking (not built yet)", Required: false),
            new("PAGEMAP_SCAN", a.PagemapScanErrno == 0, Err(a.PagemapScanErrno), "pre-copy dirty tracking (not built yet)", Required: false),
            new("CAP_SYS_RESOURCE", Cap(CAP_SYS_RESOURCE),
                "without it a hard rlimit cannot be raised and a pipe cannot grow past fs.pipe-max-size",
                "restore of such processes only", Required: false),
            new("memfd_create", a.MemfdErrno == 0, Err(a.MemfdErrno), "restore (the stub)"),
        };
        return list;
    }

    public static Answers Probe()
    {
        var status = File.ReadAllText("/proc/self/status");
        ulong capEff = 0;
        foreach (var line in status.Split('\n'))
            if (line.StartsWith("CapEff:", StringComparison.Ordinal))
                capEff = Convert.ToUInt64(line[7..].Trim(), 16);
        int scope = 0;
        try { scope = int.Parse(File.ReadAllText("/proc/sys/kernel/yama/ptrace_scope").Trim()); } catch (IOException) { }

        return new Answers
        {
            IsRoot = LibC.geteuid() == 0,
            CapEff = capEff,
            PtraceScope = scope,
            PidfdGetfdErrno = ProbePidfdGetfd(),
            UserfaultfdSyscallErrno = ProbeUffdSyscall(out ulong features),
            DevUserfaultfdExists = File.Exists("/dev/userfaultfd"),
            DevUserfaultfdErrno = ProbeDevUffd(),
            UffdFeatures = features,
            PagemapScanErrno = ProbePagemapScan(),
            MemfdErrno = ProbeMemfd(),
            KernelRelease = File.ReadAllText("/proc/sys/kernel/osrelease").Trim(),
        };
    }

    private static int ProbePidfdGetfd()
    {
        int pidfd = LibC.pidfd_open(LibC.getpid());
        if (pidfd < 0) return Errno.Last;
        int fd = LibC.pidfd_getfd(pidfd, pidfd);
        int err = fd < 0 ? Errno.Last : 0;
        if (fd >= 0) LibC.close(fd);
        LibC.close(pidfd);
        return err;
    }

    private static int ProbeUffdSyscall(out ulong features)
    {
        features = 0;
        int fd = LibC.userfaultfd(LibC.O_CLOEXEC | LibC.O_NONBLOCK);
        if (fd < 0) return Errno.Last;
        var api = new LibC.uffdio_api { api = LibC.UFFD_API };
        int rc = LibC.ioctl(fd, LibC.UFFDIO_API, &api);
        int err = rc < 0 ? Errno.Last : 0;
        features = api.features;
        LibC.close(fd);
        return err;
    }

    private static int ProbeDevUffd()
    {
        int dev = LibC.open("/dev/userfaultfd", LibC.O_RDWR | LibC.O_CLOEXEC, 0);
        if (dev < 0) return Errno.Last;
        int fd = LibC.ioctl(dev, LibC.USERFAULTFD_IOC_NEW, (void*)(LibC.O_CLOEXEC | LibC.O_NONBLOCK));
        int err = fd < 0 ? Errno.Last : 0;
        if (fd >= 0) LibC.close(fd);
        LibC.close(dev);
        return err;
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct pm_scan_arg
    {
        public ulong size, flags, start, end, walk_end, vec, vec_len, max_pages,
            category_inverted, category_mask, category_anyof_mask, return_mask;
    }

    private const ulong PAGE_IS_PRESENT = 1 << 3;

    private static int ProbePagemapScan()
    {
        nint page = LibC.mmap(0, 4096, LibC.PROT_READ | LibC.PROT_WRITE, LibC.MAP_PRIVATE | LibC.MAP_ANONYMOUS, -1, 0);
        if (page == LibC.MAP_FAILED) return Errno.Last;
        *(byte*)page = 1;
        int fd = LibC.open("/proc/self/pagemap", LibC.O_RDONLY | LibC.O_CLOEXEC, 0);
        int err;
        if (fd < 0) err = Errno.Last;
        else
        {
            ulong* regions = stackalloc ulong[3];
            var arg = new pm_scan_arg
            {
                size = (ulong)sizeof(pm_scan_arg), start = (ulong)page, end = (ulong)page + 4096,
                vec = (ulong)regions, vec_len = 1, category_anyof_mask = PAGE_IS_PRESENT, return_mask = PAGE_IS_PRESENT,
            };
            int rc = LibC.ioctl(fd, LibC.PAGEMAP_SCAN, &arg);
            err = rc < 0 ? Errno.Last : rc == 1 && regions[0] == (ulong)page ? 0 : Errno.EINVAL;
            LibC.close(fd);
        }
        LibC.munmap(page, 4096);
        return err;
    }

    private static int ProbeMemfd()
    {
        int fd = LibC.memfd_create("crisp-check", 1 /* MFD_CLOEXEC */);
        if (fd < 0) return Errno.Last;
        LibC.close(fd);
        return 0;
    }
}
