namespace Crisp.Images;

/// <summary>
/// CRIU's image magic numbers (criu/include/magic.h). Every protobuf image
/// starts with <see cref="Common"/> (or <see cref="Service"/> for CRIU's
/// private images) followed by its own magic; <c>inventory.img</c> carries only
/// its own magic; <c>pages-N.img</c> is raw page data with no magic at all.
/// All values are stored little-endian as u32.
/// </summary>
public static class ImageMagic
{
    public const uint Common = 0x54564319;
    public const uint Service = 0x55105940;

    public const uint Inventory = 0x58313116;
    public const uint Pstree = 0x50273030;
    public const uint Fdinfo = 0x56213732;
    public const uint Pagemap = 0x56084025;
    public const uint Core = 0x55053847;
    public const uint Ids = 0x54432030;
    public const uint Mm = 0x57492820;
    public const uint Fs = 0x51403912;
    public const uint Files = 0x56303138;
    public const uint Pipes = 0x56513555;
    public const uint PipesData = 0x56453709;
    public const uint Fifo = 0x58364939;
    public const uint FifoData = 0x59333054;
    public const uint RegFiles = 0x50363636;
    public const uint Creds = 0x54023547;
    public const uint Rlimit = 0x57113925;
    public const uint Sigact = 0x55344201;
    public const uint Seccomp = 0x64413049;
    public const uint Timens = 0x43114433;
    public const uint Utsns = 0x54473203;
    public const uint Netdev = 0x57373951;
    public const uint Netns = 0x55933752;
    public const uint Cpuinfo = 0x61404013;
    public const uint TtyFiles = 0x59433025;
    public const uint TtyInfo = 0x59453036;
    public const uint UnixSk = 0x54373943;
    public const uint InetSk = 0x56443851;
    public const uint SkQueues = 0x56264026;
    public const uint TcpStream = 0x51465506;
    public const uint Stats = 0x57093306;
    public const uint MemfdInode = 0x48453499;
    public const uint IpcVar = 0x53115007;
    public const uint IpcnsShm = 0x46283044;
    public const uint IpcnsMsg = 0x55453737;
    public const uint IpcnsSem = 0x59573019;
    public const uint RemapFpath = 0x59133954;
    public const uint GhostFile = 0x52583605;
    public const uint FileLocks = 0x54323616;
    public const uint TtyData = 0x59413026;
    /// <summary>crisp's own crisp-nested-pids.img (not in CRIU's magic.h): "CRSN" little-endian.</summary>
    public const uint CrispNestedPids = 0x4e535243;

    /// <summary>Whether the file starts with a second, "common" magic before its own.</summary>
    public static bool HasCommonPrefix(uint magic) => magic != Inventory;

    /// <summary>The prefix magic: <see cref="Service"/> for CRIU-internal images, else <see cref="Common"/>.</summary>
    public static uint PrefixFor(uint magic) => magic == Stats ? Service : Common;

    public static string NameOf(uint magic) => magic switch
    {
        Common => "IMG_COMMON",
        Service => "IMG_SERVICE",
        Inventory => "INVENTORY",
        Pstree => "PSTREE",
        Fdinfo => "FDINFO",
        Pagemap => "PAGEMAP",
        MemfdInode => "MEMFD_INODE",
        RemapFpath => "REMAP_FPATH",
        GhostFile => "GHOST_FILE",
        FileLocks => "FILE_LOCKS",
        TtyData => "TTY_DATA",
        Core => "CORE",
        Ids => "IDS",
        Mm => "MM",
        Fs => "FS",
        Files => "FILES",
        Pipes => "PIPES",
        PipesData => "PIPES_DATA",
        Fifo => "FIFO",
        FifoData => "FIFO_DATA",
        RegFiles => "REG_FILES",
        Creds => "CREDS",
        Rlimit => "RLIMIT",
        Sigact => "SIGACT",
        Seccomp => "SECCOMP",
        Timens => "TIMENS",
        Utsns => "UTSNS",
        Netdev => "NETDEV",
        Netns => "NETNS",
        TtyFiles => "TTY_FILES",
        TtyInfo => "TTY_INFO",
        UnixSk => "UNIXSK",
        InetSk => "INETSK",
        SkQueues => "SK_QUEUES",
        TcpStream => "TCP_STREAM",
        Stats => "STATS",
        IpcVar => "IPCNS_VAR",
        IpcnsShm => "IPCNS_SHM",
        IpcnsMsg => "IPCNS_MSG",
        IpcnsSem => "IPCNS_SEM",
        CrispNestedPids => "CRISP_NESTED_PIDS",
        _ => $"0x{magic:x8}",
    };
}
