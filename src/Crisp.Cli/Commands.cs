using System.CommandLine;
using Crisp.Checkpoint.Dump;
using Crisp.Checkpoint.Restore;
using Crisp.Native;

namespace Crisp.Cli;

/// <summary>The checkpoint/restore commands; each is wired here as its mechanism lands.</summary>
public static class Commands
{
    public static IEnumerable<Command> Create() => [DumpCmd(), PreDumpCmd(), RestoreCmd(), LazyPagesCommand.Create(), .. RemoteCommands.Create()];

    private static Command DumpCmd()
    {
        var common = new CommonOptions();
        var tree = new Option<int>("--tree", "-t") { Description = "PID of the root of the process tree to dump", Required = true };
        var leave = new Option<bool>("--leave-running", "-R") { Description = "leave the tree running after the dump" };
        var extUnix = new Option<bool>("--ext-unix-sk", "-x") { Description = "dump datagram unix sockets connected to a named socket outside the tree (restore connects them to that name again)" };
        var tcpClose = new Option<bool>("--tcp-close") { Description = "dump established TCP connections as closed sockets instead of refusing them" };
        var tcp = new TcpOptions(dump: true);
        var (prev, track) = IncrementalOptions();
        var ghostLimit = new Option<string?>("--ghost-limit") { Description = "most bytes a deleted file still open or mapped may hold on disk to be dumped with its contents (K, M, G suffixes; default 1M)" };
        var fileLocks = new Option<bool>("--file-locks", "-l") { Description = "dump file locks and leases (a tree holding any is refused without it)" };
        var cmd = new Command("dump", "Checkpoint a process tree into image files");
        cmd.Options.Add(ghostLimit);
        cmd.Options.Add(fileLocks);
        cmd.Options.Add(tree);
        cmd.Options.Add(prev);
        cmd.Options.Add(track);
        cmd.Options.Add(leave);
        AddIrmapOptions(cmd);
        AddLinkRemapOption(cmd);
        cmd.Options.Add(extUnix);
        cmd.Options.Add(tcpClose);
        tcp.AddTo(cmd);
        common.AddTo(cmd);
        var remote = new Remote.RemoteDumpOptions();
        remote.AddTo(cmd);
        cmd.SetAction(r => CrispCommand.Guard("dump", () =>
        {
            common.ConfigureLog(r);
            var options = new DumpOptions
            {
                Pid = r.GetValue(tree),
                ImagesDir = common.Images(r),
                LeaveRunning = r.GetValue(leave),
                ExtUnixSk = r.GetValue(extUnix),
                TcpClose = r.GetValue(tcpClose),
                TcpEstablished = r.GetValue(tcp.Established),
                SkipInFlight = r.GetValue(tcp.SkipInFlight!),
                NetworkLock = tcp.Lock(r),
                FileLocks = r.GetValue(fileLocks),
                GhostLimit = r.GetValue(ghostLimit) is string g ? ParseSize("--ghost-limit", g) : DumpOptions.DefaultGhostLimit,
                WaitForKilledTree = false, // crisp exits right after: no need to watch the teardown
                PrevImagesDir = r.GetValue(prev),
                TrackMem = r.GetValue(track),
            };
            if (remote.Active(r))
            {
                if (options.PrevImagesDir != null) throw new UsageException("--prev-images-dir cannot be combined with --page-server or --lazy-pages");
                return Remote.RemoteDump.Run(r, remote, options);
            }
            var result = Dumper.Dump(options);
            Crisp.Native.Log.I($"dumped {result.Processes} process(es), {result.Threads} thread(s), {result.PagesWritten} pages" +
                (options.PrevImagesDir != null ? $" ({result.ParentPages} more in the parent images)" : "") + $" in {result.Total.TotalMilliseconds:F1} ms");
            return CrispCommand.ExitOk;
        }));
        return cmd;
    }

    /// <summary>CRIU's options of incremental dumps, for dump and pre-dump alike.</summary>
    private static (Option<string?> Prev, Option<bool> Track) IncrementalOptions() => (
        new Option<string?>("--prev-images-dir") { Description = "images of an earlier pre-dump or dump of this tree, relative to the images dir: linked as its parent; with --track-mem pages not written since are left there" },
        new Option<bool>("--track-mem") { Description = "track the tree's memory writes (userfaultfd write-protection, async) so the next dump writes only what changed" });

    /// <summary>CRIU's pre-dump: the tree's memory now, while it goes on running; a later dump --prev-images-dir writes only what changed.</summary>
    private static Command PreDumpCmd()
    {
        var common = new CommonOptions();
        var tree = new Option<int>("--tree", "-t") { Description = "PID of the root of the process tree", Required = true };
        var (prev, track) = IncrementalOptions();
        var cmd = new Command("pre-dump", "Write a process tree's memory while it goes on running (memory tracking is always on, as in CRIU)");
        cmd.Options.Add(tree);
        cmd.Options.Add(prev);
        cmd.Options.Add(track);
        common.AddTo(cmd);
        cmd.SetAction(r => CrispCommand.Guard("pre-dump", () =>
        {
            common.ConfigureLog(r);
            var result = Dumper.PreDump(new DumpOptions
            {
                Pid = r.GetValue(tree), ImagesDir = common.Images(r), LeaveRunning = true,
                PrevImagesDir = r.GetValue(prev), TrackMem = true,
            });
            Log.I($"pre-dumped {result.Processes} process(es): {result.PagesWritten} pages" +
                (r.GetValue(prev) != null ? $" ({result.ParentPages} more in the parent images)" : "") + $", frozen {result.Frozen.TotalMilliseconds:F1} ms");
            return CrispCommand.ExitOk;
        }));
        return cmd;
    }

    /// <summary>
    /// CRIU's inode-to-path options (dump and restore take them alike): crisp always records a
    /// watched inode's path through its file handle at dump, no scan needed, so they change nothing.
    /// </summary>
    private static void AddIrmapOptions(Command cmd)
    {
        cmd.Options.Add(new Option<bool>("--force-irmap") { Description = "accepted for CRIU compatibility: inotify watch paths are always recorded" });
        cmd.Options.Add(new Option<string[]>("--irmap-scan-path") { Description = "accepted for CRIU compatibility (no inode scan is needed)" });
    }

    /// <summary>
    /// CRIU's --link-remap (dump and restore take it alike). A file deleted while open with no
    /// name left (link count 0) is always dumped as a ghost, with or without it; one deleted
    /// under this name but still linked under another, which CRIU links back for the restore
    /// with it, is refused by crisp either way: crisp makes no link-remap files.
    /// </summary>
    private static void AddLinkRemapOption(Command cmd) =>
        cmd.Options.Add(new Option<bool>("--link-remap") { Description = "accepted for CRIU compatibility: deleted files are dumped as ghosts; one still linked under another name is refused with or without it" });

    private static Command RestoreCmd()
    {
        var common = new CommonOptions();
        var detached = new Option<bool>("--restore-detached", "-d") { Description = "exit once the process runs, instead of waiting for it" };
        var pidfile = new Option<string?>("--pidfile") { Description = "write the restored root's pid to this file" };
        var shellJob = new Option<bool>("--shell-job", "-j") { Description = "give the restored process crisp's terminal for stdio that was a tty" };
        var inherit = new Option<string[]>("--inherit-fd") { Description = "fd[N]:KEY: use crisp's fd N for the external file KEY (a path or pipe:[INODE])", AllowMultipleArgumentsPerToken = false };
        var lazy = new Option<bool>("--lazy-pages") { Description = "restore private anonymous memory lazily through the lazy-pages daemon" };
        var huge = new Option<bool>("--huge-pages") { Description = "restore whole 2 MiB blocks of anonymous memory as transparent huge pages (slower restore on VMs with free page reporting, much faster first access afterwards)" };
        var cpuCap = new Option<string?>("--cpu-cap") { Description = "checks of the dumped CPU against this one: fpu, ins, cpu (strict), all, none, ^ inverts (default fpu,ins; without a value all)", Arity = ArgumentArity.ZeroOrOne };
        var extUnix = new Option<bool>("--ext-unix-sk", "-x") { Description = "connect datagram unix sockets dumped with --ext-unix-sk to their outside peer's name again" };
        var fileLocksR = new Option<bool>("--file-locks", "-l") { Description = "take the dumped file locks and leases again" };
        var tcpClose = new Option<bool>("--tcp-close") { Description = "restore established TCP connections as closed sockets" };
        var tcp = new TcpOptions(dump: false);
        var cmd = new Command("restore", "Restore a process tree from image files");
        foreach (var o in new Option[] { detached, pidfile, shellJob, inherit, lazy, huge, cpuCap, extUnix, tcpClose, fileLocksR }) cmd.Options.Add(o);
        tcp.AddTo(cmd);
        AddIrmapOptions(cmd);
        AddLinkRemapOption(cmd);
        common.AddTo(cmd);
        cmd.SetAction(r => CrispCommand.Guard("restore", () =>
        {
            common.ConfigureLog(r);
            var inheritFds = new Dictionary<string, int>();
            foreach (var spec in r.GetValue(inherit) ?? [])
            {
                var (key, fd) = ParseInheritFd(spec);
                inheritFds[key] = fd;
            }
            var pidfilePath = r.GetValue(pidfile);
            var restored = Restorer.Restore(new RestoreOptions
            {
                ImagesDir = common.Images(r),
                WorkDir = common.Work(r),
                Detached = r.GetValue(detached),
                PidFile = pidfilePath is null ? null : Path.GetFullPath(pidfilePath),
                ShellJob = r.GetValue(shellJob),
                InheritFds = inheritFds,
                Lazy = r.GetValue(lazy),
                HugePages = r.GetValue(huge),
                CpuCap = r.GetResult(cpuCap) is null ? Crisp.Checkpoint.Cpu.CpuCap.Default : Crisp.Checkpoint.Cpu.CpuFeatures.Parse(r.GetValue(cpuCap)),
                ExtUnixSk = r.GetValue(extUnix),
                TcpEstablished = r.GetValue(tcp.Established),
                TcpClose = r.GetValue(tcpClose),
                FileLocks = r.GetValue(fileLocksR),
            });
            Log.I($"restored {restored.Pid} ({restored.Pids.Count} process(es)) in {restored.Elapsed.TotalMilliseconds:F1} ms");
            if (r.GetValue(detached)) return CrispCommand.ExitOk;
            Log.Close();
            return restored.WaitForExit();
        }));
        return cmd;
    }

    /// <summary>CRIU's options for established TCP connections (dump and restore take them alike).</summary>
    internal sealed class TcpOptions
    {
        public readonly Option<bool> Established = new("--tcp-established") { Description = "checkpoint/restore established TCP connections (TCP repair)" };
        public readonly Option<bool>? SkipInFlight;
        public readonly Option<string> NetworkLock = new("--network-lock")
        {
            Description = "how connections are kept quiet from the freeze until restore: nftables (default), iptables, skip",
            DefaultValueFactory = _ => "nftables",
        };

        public TcpOptions(bool dump)
        {
            // CRIU's restore takes it too (zdtm's socket-tcp-skip-in-flight passes it to both): nothing to skip there.
            SkipInFlight = new("--skip-in-flight")
            {
                Description = dump ? "leave out connections a listener has not accepted yet instead of refusing"
                                   : "accepted as CRIU does; the dump already left such connections out",
            };
            NetworkLock.AcceptOnlyFromAmong("nftables", "iptables", "skip");
        }

        public void AddTo(Command cmd)
        {
            cmd.Options.Add(Established);
            if (SkipInFlight != null) cmd.Options.Add(SkipInFlight);
            cmd.Options.Add(NetworkLock);
        }

        public Crisp.Checkpoint.Sockets.NetworkLockMethod Lock(ParseResult r) => r.GetValue(NetworkLock) switch
        {
            "iptables" => Crisp.Checkpoint.Sockets.NetworkLockMethod.Iptables,
            "skip" => Crisp.Checkpoint.Sockets.NetworkLockMethod.Skip,
            _ => Crisp.Checkpoint.Sockets.NetworkLockMethod.Nftables,
        };
    }

    /// <summary>A size as CRIU takes it: bytes, or with a K, M or G suffix.</summary>
    internal static long ParseSize(string option, string value)
    {
        string v = value.Trim();
        long unit = 1;
        if (v.Length > 0 && char.ToUpperInvariant(v[^1]) is 'K' or 'M' or 'G' && v[^1] is var u)
        {
            unit = char.ToUpperInvariant(u) switch { 'K' => 1L << 10, 'M' => 1L << 20, _ => 1L << 30 };
            v = v[..^1];
        }
        if (!long.TryParse(v, out long n) || n < 0 || n > long.MaxValue / unit)
            throw new UsageException($"{option} {value}: expected a size in bytes, e.g. 4096, 64K, 10M or 1G");
        return n * unit;
    }

    /// <summary>CRIU's --inherit-fd syntax: fd[N]:KEY.</summary>
    internal static (string Key, int Fd) ParseInheritFd(string spec)
    {
        int colon = spec.IndexOf(':');
        if (!spec.StartsWith("fd[", StringComparison.Ordinal) || colon < 0 || spec[colon - 1] != ']'
            || !int.TryParse(spec.AsSpan(3, colon - 4), out int fd) || fd < 0 || colon == spec.Length - 1)
            throw new UsageException($"--inherit-fd {spec}: expected fd[N]:KEY, e.g. fd[3]:pipe:[12345]");
        return (spec[(colon + 1)..], fd);
    }
}
