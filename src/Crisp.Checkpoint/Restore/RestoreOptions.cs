using Crisp.Native;

namespace Crisp.Checkpoint.Restore;

/// <summary>What <see cref="Restorer.Restore"/> restores and how.</summary>
public sealed class RestoreOptions
{
    /// <summary>Directory holding the images (crisp restore -D).</summary>
    public required string ImagesDir { get; init; }
    /// <summary>Work directory (-W): lazy-pages.socket lives here. Defaults to <see cref="ImagesDir"/>.</summary>
    public string? WorkDir { get; init; }
    /// <summary>-d: the caller does not wait for the process (informational for the library; the CLI returns at once).</summary>
    public bool Detached { get; init; }
    /// <summary>--pidfile: the root pid is written here once the process runs.</summary>
    public string? PidFile { get; init; }
    /// <summary>-j: terminal files (/dev/pts/N, /dev/ttyX, /dev/tty) are connected to crisp's own stdin/stdout/stderr.</summary>
    public bool ShellJob { get; init; }
    /// <summary>--inherit-fd fd[N]:KEY: KEY (a file path, with or without leading '/', or "pipe:[INODE]") → crisp's fd N.</summary>
    public IReadOnlyDictionary<string, int> InheritFds { get; init; } = new Dictionary<string, int>();
    /// <summary>--lazy-pages: leave private anonymous memory empty and hand a userfaultfd to the lazy-pages daemon.</summary>
    public bool Lazy { get; init; }
    /// <summary>
    /// --huge-pages: whole 2 MiB blocks of private anonymous memory go in as transparent huge pages
    /// (RestoreHuge.cs). Off by default: where the hypervisor takes freed memory back (free page
    /// reporting) every new huge page costs host faults, and the restore gets slower.
    /// </summary>
    public bool HugePages { get; init; }
    /// <summary>
    /// Keep the dumped vDSO as a proxy that jumps into this kernel's even when the two match
    /// (VdsoProxy.cs), so the path a restore onto another kernel build takes can be tested
    /// anywhere. Defaults to the environment: CRISP_VDSO_PROXY=force.
    /// </summary>
    public bool ForceVdsoProxy { get; init; } = Environment.GetEnvironmentVariable("CRISP_VDSO_PROXY") == "force";
    /// <summary>
    /// --cpu-cap: which checks of the dumped CPU (cpuinfo.img) against this one must pass
    /// (Cpu/CpuFeatures.cs); CRIU's default, FPU state and instruction sets.
    /// </summary>
    public Crisp.Checkpoint.Cpu.CpuCap CpuCap { get; init; } = Crisp.Checkpoint.Cpu.CpuCap.Default;

    /// <summary>CRIU's --ext-unix-sk: sockets whose peer was outside the dumped tree are connected to its name again.</summary>
    public bool ExtUnixSk { get; init; }

    /// <summary>CRIU's --tcp-established: established TCP connections in the images are rebuilt (Sockets/TcpRepair.cs).</summary>
    public bool TcpEstablished { get; init; }

    /// <summary>CRIU's --tcp-close: established TCP connections in the images come back as closed sockets.</summary>
    public bool TcpClose { get; init; }

    /// <summary>CRIU's --file-locks: take the dumped file locks and leases again (images holding any are refused without it).</summary>
    public bool FileLocks { get; init; }
}
