using Crisp.Checkpoint.Sockets;
using Crisp.Images;
using Crisp.Images.Proto;
using Crisp.Native;

namespace Crisp.Checkpoint.Restore;

/// <summary>
/// Everything a restore learns or makes on its way, in one place. The steps (RestoreSteps.cs)
/// are methods of <see cref="RestoreSession"/> that read and write this and nothing else
/// mutable; each property says which step sets it and who reads it. Grouped by the step that
/// fills it, in the order the steps run. "crisp's fd" is a descriptor in crisp itself, closed
/// before the restore returns (or when it fails).
/// </summary>
internal sealed class RestoreContext
{
    // ---- the step runner (RestoreSteps.cs) ---------------------------------------------------

    /// <summary>The step running: set by the runner (and put back by BeforeCloning); named in a failure's message.</summary>
    public string CurrentStep { get; set; } = "start";
    /// <summary>Each step's time, in order: appended by the runner; returned as RestoredProcess.Steps.</summary>
    public List<(string Step, TimeSpan Took)> StepTimes { get; } = [];

    // ---- connect to the lazy-pages daemon ----------------------------------------------------

    /// <summary>The hand-off connection (--lazy-pages): set by ConnectLazyPages; used by RegisterLazy; finished by FinishLazy, dropped on failure.</summary>
    public LazyHandOffConnection? Lazy { get; set; }

    // ---- read images (LoadImages and what it calls) ------------------------------------------

    /// <summary>The images: set by LoadImages; read by every later step.</summary>
    public ImageDir Dir { get; set; } = null!;
    /// <summary>The inventory: set by LoadImages; read by the sockets steps (connections, the network lock) and namespace files.</summary>
    public InventoryEntry Inventory { get; set; } = null!;
    /// <summary>The processes, root first: set by LoadImages; read by every later step.</summary>
    public List<ProcessImage> Procs { get; set; } = null!;
    /// <summary>Dumped zombies: filled by LoadImages; read by CheckPids, ReadNestedPidNamespaces and CreateTree (which makes them).</summary>
    public List<ZombieImage> Zombies { get; } = [];
    /// <summary>files.img by id: set by LoadImages; read by the sockets, terminals, memory (file VMAs) and files steps.</summary>
    public Dictionary<uint, FileEntry> Files { get; set; } = null!;

    /// <summary>The tree owned its pid namespace (restored in a new one): set by ReadNamespaces; read by CheckPids, StartStub, CreateRoot, Clone.</summary>
    public bool OwnPidNs { get; set; }
    /// <summary>The tree owned its mount namespace (a new one with a fresh /proc): set by ReadNamespaces; read by CreateRoot.</summary>
    public bool OwnMntNs { get; set; }
    /// <summary>Hostname and domain name of an owned UTS namespace: set by ReadNamespaces; read by CreateRoot.</summary>
    public UtsnsEntry? Uts { get; set; }
    /// <summary>An owned IPC namespace's objects: set by ReadIpcNamespace; read by LoadImages (SysV VMAs), CreateRoot and the memory step (AttachSysvShm).</summary>
    public IpcNamespaceImage? Ipc { get; set; }
    /// <summary>An owned time namespace's offsets: set by ReadTimeNamespace; read by CreateRoot.</summary>
    public TimensEntry? Timens { get; set; }
    /// <summary>Root-namespace tid → its pids in nested pid namespaces: set by ReadNestedPidNamespaces; read by StartStub, CreateTree, "set pid_for_children".</summary>
    public Dictionary<int, NestedPid> NestedPids { get; set; } = [];

    /// <summary>Descriptors made only to open a file in flight: filled by NoteFilesInFlight; used and emptied by SendFilesInFlight.</summary>
    public List<(ProcessImage P, int Fd)> InFlightFds { get; } = [];
    /// <summary>File ids held by two or more processes: set by FindSharedFiles; read by the files step (PlaceShared, KeepShared).</summary>
    public HashSet<uint> CrossProcessIds { get; set; } = null!;
    /// <summary>Pipe inodes with ends in two or more processes: set by FindSharedFiles; read by the files step (KeepSharedPipe).</summary>
    public HashSet<uint> CrossProcessPipes { get; set; } = null!;

    /// <summary>Ghost files made, in creation order: filled by CreateGhosts; removed before resume, or on failure (RemoveGhosts).</summary>
    public List<(string Path, bool Dir)> GhostPaths { get; } = [];
    /// <summary>Directories made for ghost files: filled by CreateGhosts; removed with them (RemoveGhosts).</summary>
    public List<string> GhostParents { get; } = [];
    /// <summary>The dumped inode → its ghost's path here: filled by CreateGhosts; read by the files step (inotify watches).</summary>
    public Dictionary<(uint Dev, ulong Ino), string> GhostInodes { get; } = [];
    /// <summary>Stand-in processes for /proc entries of dead pids: started by CreateGhosts; ended before resume, or on failure (RemoveGhosts).</summary>
    public List<int> DeadProcHelpers { get; } = [];

    // Images a step reads on its first use (null until then).
    /// <summary>fifo-data.img by pipe id: read by the files step (PlaceFifo).</summary>
    public Dictionary<uint, PipeData>? FifoData { get; set; }
    /// <summary>file-locks.img: read by the file locks step.</summary>
    public List<FileLockEntry>? FileLocks { get; set; }
    /// <summary>memfd inodes by id: read by the files and memory steps (MemfdInode).</summary>
    public Dictionary<ulong, MemfdInodeEntry>? MemfdInodes { get; set; }
    /// <summary>seccomp.img: read by the seccomp step.</summary>
    public SeccompEntry? Seccomp { get; set; }

    // ---- find memory shared with parents (FindInheritedVmas) ---------------------------------

    /// <summary>Dumped pid → its VMAs inherited from its parent (by start): set by FindInheritedVmas; read by the memory steps.</summary>
    public Dictionary<int, Dictionary<ulong, VmaEntry>> Inherited { get; } = [];
    /// <summary>Dumped pids whose children inherit some of their memory: set by FindInheritedVmas; read by CreateTree (BeforeCloning restores them first).</summary>
    public HashSet<int> CowParents { get; } = [];

    // ---- create the network namespace (RestoreNetns.cs) ----------------------------------------

    /// <summary>An owned network namespace's images: set by ReadNamespaces (ReadNetns); read by "create the network namespace".</summary>
    public NetnsImages? NetnsImages { get; set; }
    /// <summary>crisp's fd of the tree's new network namespace: set by CreateNetns; read by the sockets step (LockNetns); closed by LeaveNetns.</summary>
    public int TreeNetnsFd { get; set; } = -1;
    /// <summary>crisp's fd of its own network namespace, to go back to: set by CreateNetns; used and closed by LeaveNetns (at the end or on failure).</summary>
    public int CrispNetnsFd { get; set; } = -1;

    // ---- create sockets (CreateSockets) -------------------------------------------------------

    /// <summary>Paths bound by this restore: filled by CreateSockets; removed if the restore fails (RemoveSocketFiles).</summary>
    public List<string> SocketFiles { get; } = [];
    /// <summary>TCP connections in repair mode: filled by CreateSockets; taken out of repair by "take connections out of repair mode".</summary>
    public List<(int Fd, bool ReuseAddr, string Target)> RepairedTcp { get; } = [];
    /// <summary>The network lock held for restored connections: set by CreateSockets (LockConnections); released by "unlock the network", or on failure.</summary>
    public NetworkLock? NetLock { get; set; }
    /// <summary>Unix sockets whose queues carry files in flight: set by CreateSockets; finished by "send files in flight" (RestoreInFlight.cs).</summary>
    public RestoreSession.UnixBatch? UnixLater { get; set; }
    /// <summary>Bound sockets whose reuse flags were forced on: filled by CreateSockets; put back by it once all are bound.</summary>
    public List<(int Fd, bool ReuseAddr, bool ReusePort, string Target)> ReuseLater { get; } = [];

    // ---- start the stub (StartStub) -----------------------------------------------------------

    /// <summary>The stub process: set by StartStub; cleared by CreateRoot once it is killed; killed on failure.</summary>
    public int StubPid { get; set; } = -1;
    /// <summary>The control page (code + scratch): the stub's entry by StartStub, the real page by CreateRoot; every injected call runs there.</summary>
    public ulong Ctl { get; set; }
    /// <summary>Where CreateRoot maps the control page: set by StartStub; read by CreateRoot, MoveVdso and Scratch.</summary>
    public ulong PendingCtl { get; set; }
    /// <summary>A temporary place for vDSO moves: set by StartStub; read by the memory step (MoveBlock).</summary>
    public ulong Temp { get; set; }
    /// <summary>First fd number of crisp's fds passed to the stub: set by StartStub; read by the files step.</summary>
    public int ExtraBase { get; set; }
    /// <summary>Crisp's fds passed to the stub (its pidfd, --inherit-fd targets, -j's stdio), in order: filled by StartStub; read by the files step.</summary>
    public List<int> ExtraCrispFds { get; } = [];
    /// <summary>Crisp's pidfd, passed into new pid namespaces: set by StartStub; read by the tree, memory and files steps; closed at the end or on failure.</summary>
    public int SelfPidfd { get; set; } = -1;

    // ---- create the root, the tree, the threads -----------------------------------------------

    /// <summary>tid here → its task: filled by StartStub, CreateRoot and CreateTree (Clone); read by every later step and by KillEverything.</summary>
    public Dictionary<int, RestoreTask> Tasks { get; } = new();
    /// <summary>Every tid made, in order: filled by Clone; what KillEverything kills on failure.</summary>
    public List<int> Created { get; } = [];
    /// <summary>Dumped pid/tid → pid/tid here: filled by Clone; read by CreateTree and the files step (pidfds).</summary>
    public Dictionary<int, int> HostOf { get; } = [];
    /// <summary>Pid here → its depth below the root's pid namespace: filled by Clone; read by it for later children.</summary>
    public Dictionary<int, int> NsDepthHere { get; } = [];
    /// <summary>Dumped pid → the fds of its mapped files, once its address space is restored: set by the address-space steps (run early for CowParents by BeforeCloning); read by the per-process steps.</summary>
    public Dictionary<int, Dictionary<uint, int>> AddressSpaces { get; } = [];

    // ---- create terminals (CreateTerminals) ---------------------------------------------------

    /// <summary>tty-info.img by id: set by CreateTerminals; read by it and the files step (controlling terminal).</summary>
    public Dictionary<uint, TtyInfoEntry> TtyInfos { get; set; } = [];
    /// <summary>Pty index → crisp's master: filled by CreateTerminals; read by the task state step (controlling terminal); closed with the shared copies.</summary>
    public Dictionary<int, int> PtyMasters { get; } = [];

    // ---- per process: memory ------------------------------------------------------------------

    /// <summary>Pid → the address of a syscall instruction in its restored vDSO: set by "move the vDSO"; read by ResumeAll.</summary>
    public Dictionary<int, ulong> VdsoSyscall { get; } = new();
    /// <summary>Read-only VMAs mapped writable until their pages are written: filled by "map VMAs"; read by "write memory", which then protects and empties it.</summary>
    public List<VmaEntry> WriteFirst { get; } = [];
    /// <summary>Shmid → crisp's fd of the shared anonymous object: filled by "map VMAs"; closed with the shared copies.</summary>
    public Dictionary<ulong, int> SharedAnonFds { get; } = [];

    // ---- per process: files (and the sockets, terminals, memory steps that place shared files) --

    /// <summary>File id → crisp's copy of a description shared across processes: filled by the sockets, terminals and files steps; read by later processes' files steps and "send files in flight"; closed by CloseSharedCopies.</summary>
    public Dictionary<uint, int> CrispCopies { get; } = [];
    /// <summary>Pipe inode → crisp's copies of both ends: filled by the files step; closed by CloseSharedCopies.</summary>
    public Dictionary<uint, (int R, int W)> CrispPipes { get; } = [];
    /// <summary>Pipe (id, read end) → the file id made by pipe2: filled and read by the files step.</summary>
    public Dictionary<(uint PipeId, bool Read), uint> PipeEndOwners { get; } = [];
    /// <summary>Process → its fd for crisp's pidfd: filled by CrispFdIntoTask; emptied by ForgetCrispPidfd.</summary>
    public Dictionary<int, int> CrispPidfdIn { get; } = [];
    /// <summary>files_ids whose files step ran: filled per process; read by CrispFdIntoTask.</summary>
    public HashSet<uint> FdTablesDone { get; } = [];
    /// <summary>File ids whose status flags and owner are set: filled and read by the files step.</summary>
    public HashSet<uint> ConfiguredFiles { get; } = [];
    /// <summary>FIFO pipe id → crisp's O_RDWR fd holding it open: filled by the files step (PlaceFifo); closed with the shared copies.</summary>
    public Dictionary<uint, int> FifoHolds { get; } = [];
    /// <summary>Memfd inode id → crisp's fd: filled by MemfdInode (files and memory steps); closed with the shared copies.</summary>
    public Dictionary<ulong, int> MemfdInodeFds { get; } = [];
    /// <summary>Memfd inodes whose memfd_create description was given out (to the first O_RDWR fd): filled by OpenMemfd; emptied with the shared copies.</summary>
    public HashSet<ulong> MemfdOriginalUsed { get; } = [];
}
