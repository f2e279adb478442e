using Crisp.Images;
using Crisp.Inject;
using Crisp.Native;
using Crisp.Native.ProcFs;

namespace Crisp.Checkpoint.Dump;

/*
 * Memory tracking for incremental dumps (CRIU's --track-mem), without soft-dirty.
 *
 * This kernel has no soft-dirty bits. What it has is userfaultfd write-protection in async mode
 * (UFFD_FEATURE_WP_ASYNC, Linux 6.7): on a VMA registered with UFFDIO_REGISTER_MODE_WP, a write
 * to a write-protected page is resolved by the kernel itself (no event, no reader), and the page
 * reads as PAGE_IS_WRITTEN in LibC.PAGEMAP_SCAN until LibC.PAGEMAP_SCAN with PM_SCAN_WP_MATCHING protects
 * it again. So:
 *
 *   - pre-dump (and any dump that leaves the tree running) makes, while the tree is frozen, a
 *     userfaultfd inside each process (injected: a uffd acts on its creator's mm), moves it to a
 *     high descriptor (F_DUPFD_CLOEXEC), takes it with pidfd_getfd for UFFDIO_API and the WP
 *     registrations (which work on the taken fd), and write-protects every present page of the
 *     registered VMAs. The process keeps its descriptor: when the last reference to a uffd goes,
 *     the kernel drops its registrations, and crisp exits right after the pre-dump.
 *   - the next dump reads PAGE_IS_WRITTEN with the pages (MemoryDump.ScanRuns). A page that is
 *     present, in a VMA still registered (smaps "uw"), not written, and present in the parent
 *     images goes into the pagemap as PE_PARENT without data.
 *
 * A VMA made, moved (mremap) or replaced since is not registered, or the kernel cleared the
 * protection of its pages (it does on mremap and fork without UFFD_FEATURE_EVENT_REMAP/FORK):
 * its pages read as written and are dumped. Which images the protection is relative to is kept
 * in /run/crisp/track-mem/PID-STARTTIME (the descriptor and the images directory of the last
 * reset): a dump whose --prev-images-dir is another directory (an older pre-dump, say) does not
 * use the tracking at all and dumps every page.
 *
 * Dumps skip the tracking descriptor (it is crisp's, not the process's), in children too, which
 * inherit it over fork: a userfaultfd at the recorded descriptor number with WP_ASYNC.
 */
internal static unsafe class WriteTracking
{
    private const string StateDir = "/run/crisp/track-mem";
    private const ulong Features = LibC.UFFD_FEATURE_WP_ASYNC;
    private const ulong PM_SCAN_WP_MATCHING = 1, PM_SCAN_CHECK_WPASYNC = 2;
    /// <summary>Where the tracking descriptor goes in the process: the lowest free one from here (below the soft RLIMIT_NOFILE).</summary>
    private const int HighFd = 1000;

    private readonly record struct State(int Fd, string Images);

    private static string StatePath(int pid) => Path.Combine(StateDir, $"{pid}-{Proc.Stat(pid).StartTime}");

    private static State? ReadState(int pid)
    {
        try
        {
            var parts = File.ReadAllText(StatePath(pid)).Split('\n', 2);
            return new State(int.Parse(parts[0], System.Globalization.CultureInfo.InvariantCulture), parts[1].TrimEnd('\n'));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException or IndexOutOfRangeException) { return null; }
    }

    /// <summary>Whether <paramref name="vma"/> is one the tracking can cover: private anonymous memory with pages.</summary>
    public static bool Trackable(DumpedVma vma) =>
        vma.CarriesPages && !vma.Source.IsVdso && !vma.AnonPagesOnly && !vma.Source.Shared &&
        (vma.Entry.Status & VmaStatus.VMA_ANON_PRIVATE) != 0 && (vma.Entry.Flags & 0x08) == 0; // not MAP_DROPPABLE

    /// <summary>Whether the kernel write-protection of <paramref name="vma"/> is live (smaps VmFlags "uw").</summary>
    public static bool Tracked(DumpedVma vma) => Trackable(vma) && vma.Source.RawVmFlags.Contains("uw");

    /// <summary>
    /// Whether the written state of <paramref name="pid"/>'s memory is relative to the images in
    /// <paramref name="parentDir"/> (the last reset was made by the dump that wrote them).
    /// </summary>
    public static bool RelativeTo(int pid, string parentDir)
    {
        var s = ReadState(pid);
        if (s is null) return false;
        string want;
        try { want = Canonical(parentDir); }
        catch (Exception e) when (e is IOException or SyscallException) { return false; }
        return s.Value.Images == want;
    }

    /// <summary>The descriptor numbers crisp's trackers have in processes of this host (for the fd table to skip).</summary>
    public static bool IsTracker(int pid, int fd, string link)
    {
        if (link != "anon_inode:[userfaultfd]") return false;
        bool known = false;
        try
        {
            if (Directory.Exists(StateDir))
                foreach (var f in Directory.EnumerateFiles(StateDir))
                    if (File.ReadAllText(f).Split('\n', 2)[0] == fd.ToString(System.Globalization.CultureInfo.InvariantCulture)) { known = true; break; }
        }
        catch (IOException) { return false; }
        if (!known) return false;
        // fdinfo: "API:\t<api>:<features>:<ioctls>" (hex).
        foreach (var line in File.ReadAllLines($"/proc/{pid}/fdinfo/{fd}"))
        {
            if (!line.StartsWith("API:", StringComparison.Ordinal)) continue;
            var p = line[4..].Trim().Split(':');
            return p.Length >= 2 && ulong.TryParse(p[1], System.Globalization.NumberStyles.HexNumber, null, out ulong features) &&
                   (features & LibC.UFFD_FEATURE_WP_ASYNC) != 0;
        }
        return false;
    }

    /// <summary>
    /// With <paramref name="proc"/> frozen and its pages read: makes (or finds) its tracking uffd,
    /// registers every trackable VMA not registered yet, write-protects every page of them, and
    /// records that the written state is now relative to <paramref name="imagesDir"/>.
    /// Returns the number of VMAs tracked. A failure leaves the process as usable as it was (at
    /// worst with a tracker descriptor and some VMAs tracked, which changes nothing for it).
    /// </summary>
    public static int Reset(SeizedProcess proc, IReadOnlyList<DumpedVma> vmas, string imagesDir)
    {
        int pid = proc.Pid;
        var state = ReadState(pid);
        int taskFd = -1;
        if (state is { } s && Proc.Fds(pid).Contains(s.Fd) && IsTracker(pid, s.Fd, Proc.FdTarget(pid, s.Fd))) taskFd = s.Fd;
        bool fresh = taskFd < 0;
        if (fresh)
        {
            using var sys = proc.Inject(proc.Leader);
            int fd = (int)sys.Check("userfaultfd (write tracking)", LibC.SYS_userfaultfd, LibC.O_CLOEXEC | LibC.O_NONBLOCK);
            long high = sys.Call(LibC.SYS_fcntl, fd, LibC.F_DUPFD_CLOEXEC, HighFd);
            if (high >= 0)
            {
                sys.Call(LibC.SYS_close, fd);
                fd = (int)high;
            }
            taskFd = fd;
        }
        int pidfd = Errno.Check(LibC.pidfd_open(pid), "pidfd_open", $"process {pid}");
        int uffd;
        try { uffd = Errno.Check(LibC.pidfd_getfd(pidfd, taskFd), "pidfd_getfd", $"tracking uffd {taskFd} of process {pid}"); }
        finally { LibC.close(pidfd); }
        int tracked = 0;
        try
        {
            if (fresh)
            {
                var api = new LibC.uffdio_api { api = LibC.UFFD_API, features = Features };
                if (LibC.ioctl(uffd, LibC.UFFDIO_API, &api) != 0)
                    throw Errno.Failure("ioctl(UFFDIO_API)", $"tracking uffd of process {pid} (UFFD_FEATURE_WP_ASYNC)");
            }
            var ranges = new List<(ulong Start, ulong End)>();
            foreach (var v in vmas)
            {
                if (!Trackable(v)) continue;
                if (!v.Source.RawVmFlags.Contains("uw"))
                {
                    var reg = new LibC.uffdio_register
                    {
                        range = new LibC.uffdio_range { start = v.Entry.Start, len = v.Entry.End - v.Entry.Start },
                        mode = LibC.UFFDIO_REGISTER_MODE_WP,
                    };
                    if (LibC.ioctl(uffd, LibC.UFFDIO_REGISTER, &reg) != 0)
                    {
                        // EBUSY: the process registered it with a uffd of its own. Its pages are then always dumped.
                        Log.D($"process {pid}: VMA {v.Source} not tracked: UFFDIO_REGISTER(WP) {Errno.Name(Errno.Last)}");
                        continue;
                    }
                }
                ranges.Add((v.Entry.Start, v.Entry.End));
                tracked++;
            }
            WriteProtect(pid, ranges);
        }
        finally { LibC.close(uffd); }

        Directory.CreateDirectory(StateDir);
        Prune();
        File.WriteAllText(StatePath(pid), $"{taskFd}\n{Canonical(imagesDir)}\n");
        Log.D($"process {pid}: {tracked} VMA(s) write-tracked through uffd {taskFd}");
        return tracked;
    }

    /// <summary>LibC.PAGEMAP_SCAN with PM_SCAN_WP_MATCHING over the written pages: all of them are write-protected again.</summary>
    private static void WriteProtect(int pid, List<(ulong Start, ulong End)> ranges)
    {
        string path = $"/proc/{pid}/pagemap";
        int fd = Errno.Check(LibC.open(path, LibC.O_RDONLY | LibC.O_CLOEXEC, 0), "open", path);
        try
        {
            foreach (var (start, end) in ranges)
            {
                for (ulong at = start; at < end;)
                {
                    var arg = new LibC.pm_scan_arg
                    {
                        size = (ulong)sizeof(LibC.pm_scan_arg), flags = PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC,
                        start = at, end = end, category_mask = LibC.PAGE_IS_WRITTEN, return_mask = LibC.PAGE_IS_WRITTEN,
                    };
                    if (LibC.ioctl(fd, LibC.PAGEMAP_SCAN, &arg) < 0)
                        throw Errno.Failure("ioctl(PAGEMAP_SCAN, PM_SCAN_WP_MATCHING)", $"{path} 0x{at:x}-0x{end:x}");
                    at = arg.walk_end > at ? arg.walk_end : end;
                }
            }
        }
        finally { LibC.close(fd); }
    }

    /// <summary>The directory's path with every symlink resolved (what the kernel shows for an fd of it).</summary>
    private static string Canonical(string dir)
    {
        int fd = Errno.Check(LibC.open(dir, LibC.O_RDONLY | LibC.O_DIRECTORY | LibC.O_CLOEXEC, 0), "open", dir);
        try { return LibC.ReadLink($"/proc/self/fd/{fd}"); }
        finally { LibC.close(fd); }
    }

    /// <summary>Removes records of processes that are gone (a pid reused later has another start time).</summary>
    private static void Prune()
    {
        foreach (var f in Directory.EnumerateFiles(StateDir))
        {
            var name = Path.GetFileName(f).Split('-');
            if (name.Length != 2 || !int.TryParse(name[0], out int pid)) continue;
            bool alive;
            try { alive = Proc.Stat(pid).StartTime.ToString(System.Globalization.CultureInfo.InvariantCulture) == name[1]; }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or SyscallException or FormatException) { alive = false; }
            if (!alive) File.Delete(f);
        }
    }
}
