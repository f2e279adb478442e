using Crisp.Images.Pages;
using Crisp.Images.Proto;
using Google.Protobuf;

namespace Crisp.Images;

/// <summary>
/// A directory of CRIU images, with CRIU's file names. One method pair per
/// image kind; per-task images take the pid (or tid for core), fdinfo takes the
/// files_id (inventory's fdinfo_per_id), pages files are allocated ids 1, 2, ...
/// in the order pagemaps are created, like CRIU does.
/// </summary>
public sealed class ImageDir
{
    private int _lastPagesId;

    public ImageDir(string path)
    {
        Path = System.IO.Path.GetFullPath(path);
    }

    public string Path { get; }

    /// <summary>Creates the directory if needed.</summary>
    public static ImageDir Create(string path)
    {
        Directory.CreateDirectory(path);
        return new ImageDir(path);
    }

    public string PathOf(string fileName) => System.IO.Path.Combine(Path, fileName);

    public static string InventoryName => "inventory.img";
    public static string PstreeName => "pstree.img";
    public static string FilesName => "files.img";
    public static string PipesDataName => "pipes-data.img";
    public static string FifoDataName => "fifo-data.img";
    public static string SkQueuesName => "sk-queues.img";
    public static string SeccompName => "seccomp.img";
    public static string CoreName(int tid) => $"core-{tid}.img";
    public static string IdsName(int pid) => $"ids-{pid}.img";
    public static string MmName(int pid) => $"mm-{pid}.img";
    public static string PagemapName(int pid) => $"pagemap-{pid}.img";
    public static string PagesName(uint pagesId) => $"pages-{pagesId}.img";
    public static string FsName(int pid) => $"fs-{pid}.img";
    public static string FdinfoName(uint filesId) => $"fdinfo-{filesId}.img";
    public static string TimensName(uint id) => $"timens-{id}.img";
    public static string UtsnsName(uint id) => $"utsns-{id}.img";
    public const string CpuinfoName = "cpuinfo.img";
    public static string MemfdName => "memfd.img";
    public static string TcpStreamName(uint ino) => $"tcp-stream-{ino:x}.img";
    public static string ShmemPagemapName(ulong shmid) => $"pagemap-shmem-{shmid}.img";
    public static string RemapFpathName => "remap-fpath.img";
    public static string FileLocksName => "filelocks.img";
    public static string GhostFileName(uint id) => $"ghost-file-{id:x}.img";
    public static string TtyInfoName => "tty-info.img";
    public static string TtyDataName => "tty-data.img";

    public bool Exists(string fileName) => File.Exists(PathOf(fileName));

    // ---- inventory -------------------------------------------------------

    /// <summary>
    /// An inventory as CRIU 3.17 and 4.2 write it: image version 2, fdinfo and
    /// namespace images per id, no LSM, an empty plugin list (CRIU 4.x reads its
    /// presence as "no plugins needed").
    /// </summary>
    public static InventoryEntry NewInventory(TaskKobjIdsEntry rootIds, uint rootCgSet = 1) => new()
    {
        ImgVersion = 2,
        FdinfoPerId = true,
        RootIds = rootIds,
        NsPerId = true,
        RootCgSet = rootCgSet,
        Lsmtype = Lsmtype.NoLsm,
        NetworkLockMethod = 0,
        PluginsEntry = new PluginsEntry(),
        DumpCriuRunId = Guid.NewGuid().ToString(),
    };

    public InventoryEntry ReadInventory() => ReadSingle(InventoryName, ImageMagic.Inventory, InventoryEntry.Parser);
    public void WriteInventory(InventoryEntry inventory) => WriteSingle(InventoryName, ImageMagic.Inventory, inventory);

    // ---- process tree, per task ------------------------------------------

    public List<PstreeEntry> ReadPstree() => ReadAll(PstreeName, ImageMagic.Pstree, PstreeEntry.Parser);
    public void WritePstree(IEnumerable<PstreeEntry> tasks) => WriteAll(PstreeName, ImageMagic.Pstree, tasks);

    public CoreEntry ReadCore(int tid) => ReadSingle(CoreName(tid), ImageMagic.Core, CoreEntry.Parser);
    public void WriteCore(int tid, CoreEntry core) => WriteSingle(CoreName(tid), ImageMagic.Core, core);

    public TaskKobjIdsEntry ReadIds(int pid) => ReadSingle(IdsName(pid), ImageMagic.Ids, TaskKobjIdsEntry.Parser);
    public void WriteIds(int pid, TaskKobjIdsEntry ids) => WriteSingle(IdsName(pid), ImageMagic.Ids, ids);

    public MmEntry ReadMm(int pid) => ReadSingle(MmName(pid), ImageMagic.Mm, MmEntry.Parser);
    public void WriteMm(int pid, MmEntry mm) => WriteSingle(MmName(pid), ImageMagic.Mm, mm);

    public FsEntry ReadFs(int pid) => ReadSingle(FsName(pid), ImageMagic.Fs, FsEntry.Parser);
    public void WriteFs(int pid, FsEntry fs) => WriteSingle(FsName(pid), ImageMagic.Fs, fs);

    // ---- files ------------------------------------------------------------

    public List<FileEntry> ReadFiles() => ReadAll(FilesName, ImageMagic.Files, FileEntry.Parser);
    public void WriteFiles(IEnumerable<FileEntry> files) => WriteAll(FilesName, ImageMagic.Files, files);

    /// <summary>The fd table with the given files_id (task_kobj_ids_entry.files_id).</summary>
    public List<FdinfoEntry> ReadFdinfo(uint filesId) => ReadAll(FdinfoName(filesId), ImageMagic.Fdinfo, FdinfoEntry.Parser);
    public void WriteFdinfo(uint filesId, IEnumerable<FdinfoEntry> fds) => WriteAll(FdinfoName(filesId), ImageMagic.Fdinfo, fds);

    /// <summary>Pipe contents; an absent pipes-data.img means no pipe held data.</summary>
    public List<PipeData> ReadPipesData() => ReadPipeData(PipesDataName, ImageMagic.PipesData);
    public void WritePipesData(IEnumerable<PipeData> pipes) => WritePipeData(PipesDataName, ImageMagic.PipesData, pipes);

    /// <summary>Named FIFO contents (same records as pipes-data, keyed by the FIFO's pipe id); absent: none held data.</summary>
    public List<PipeData> ReadFifoData() => ReadPipeData(FifoDataName, ImageMagic.FifoData);
    public void WriteFifoData(IEnumerable<PipeData> fifos) => WritePipeData(FifoDataName, ImageMagic.FifoData, fifos);

    private List<PipeData> ReadPipeData(string name, uint magic)
    {
        var list = new List<PipeData>();
        if (!Exists(name))
            return list;
        var reader = ImageReader.Open(PathOf(name), magic);
        while (reader.TryRead(PipeDataEntry.Parser, out var entry))
            list.Add(new PipeData(entry, reader.ReadPayload(entry.Bytes).ToArray()));
        return list;
    }

    private void WritePipeData(string name, uint magic, IEnumerable<PipeData> pipes)
    {
        using var writer = new ImageWriter(PathOf(name), magic);
        foreach (var p in pipes)
        {
            if (p.Entry.Bytes != (uint)p.Data.Length)
                throw new ImageException(writer.Path, $"pipe {p.Entry.PipeId}: entry says {p.Entry.Bytes} bytes, data has {p.Data.Length}");
            writer.Write(p.Entry);
            writer.WritePayload(p.Data);
        }
    }

    /// <summary>memfd inodes; an absent memfd.img means the tree held none.</summary>
    public List<MemfdInodeEntry> ReadMemfdInodes() =>
        Exists(MemfdName) ? ReadAll(MemfdName, ImageMagic.MemfdInode, MemfdInodeEntry.Parser) : [];
    public void WriteMemfdInodes(IEnumerable<MemfdInodeEntry> inodes) => WriteAll(MemfdName, ImageMagic.MemfdInode, inodes);

    /// <summary>File locks and leases (dumped with --file-locks); absent: none.</summary>
    public List<FileLockEntry> ReadFileLocks() =>
        Exists(FileLocksName) ? ReadAll(FileLocksName, ImageMagic.FileLocks, FileLockEntry.Parser) : [];
    public void WriteFileLocks(IEnumerable<FileLockEntry> locks) => WriteAll(FileLocksName, ImageMagic.FileLocks, locks);

    /// <summary>Remapped regular files (ghosts); an absent remap-fpath.img means none.</summary>
    public List<RemapFilePathEntry> ReadRemaps() =>
        Exists(RemapFpathName) ? ReadAll(RemapFpathName, ImageMagic.RemapFpath, RemapFilePathEntry.Parser) : [];
    public void WriteRemaps(IEnumerable<RemapFilePathEntry> remaps) => WriteAll(RemapFpathName, ImageMagic.RemapFpath, remaps);

    /// <summary>
    /// A ghost file: its entry, then its bytes as CRIU lays them out: raw after the entry, or
    /// with <c>chunks</c> as (GhostChunkEntry, bytes) pairs, holes left out.
    /// </summary>
    public void WriteGhostFile(uint id, GhostFileEntry entry, IEnumerable<(long Offset, byte[] Bytes)> data)
    {
        using var writer = new ImageWriter(PathOf(GhostFileName(id)), ImageMagic.GhostFile);
        writer.Write(entry);
        foreach (var (off, bytes) in data)
        {
            if (entry.Chunks) writer.Write(new GhostChunkEntry { Off = (ulong)off, Len = (ulong)bytes.Length });
            writer.WritePayload(bytes);
        }
    }

    /// <summary>A ghost file's entry and its data runs (offset, bytes).</summary>
    public (GhostFileEntry Entry, List<(long Offset, byte[] Bytes)> Data) ReadGhostFile(uint id)
    {
        var reader = ImageReader.Open(PathOf(GhostFileName(id)), ImageMagic.GhostFile);
        var entry = reader.Read(GhostFileEntry.Parser);
        var data = new List<(long, byte[])>();
        if (entry.Chunks)
        {
            while (reader.TryRead(GhostChunkEntry.Parser, out var chunk))
            {
                if (chunk.Len > int.MaxValue) throw new ImageException(reader.Path, $"ghost chunk of {chunk.Len} bytes");
                data.Add(((long)chunk.Off, reader.ReadPayload((uint)chunk.Len).ToArray()));
            }
        }
        else if ((entry.Mode & 0xF000) == 0x8000)
        {
            var rest = reader.ReadRest();
            if (rest.Length > 0) data.Add((0, rest.ToArray()));
        }
        return (entry, data);
    }

    /// <summary>
    /// Starts pagemap-shmem-SHMID.img (a shared memory object's bytes, vaddr = offset in it)
    /// with the given pages id: callers pick ids apart from the ones process pagemaps get,
    /// which a page server may allocate on its side.
    /// </summary>
    public PagemapWriter CreateShmemPagemap(ulong shmid, uint pagesId) =>
        new(PathOf(ShmemPagemapName(shmid)), PathOf(PagesName(pagesId)), pagesId);

    public PagemapReader OpenShmemPagemap(ulong shmid) => PagemapReader.Open(PathOf(ShmemPagemapName(shmid)), Path);

    /// <summary>Queued socket packets; an absent sk-queues.img means no socket held data.</summary>
    public List<SkPacket> ReadSkQueues()
    {
        var list = new List<SkPacket>();
        if (!Exists(SkQueuesName))
            return list;
        var reader = ImageReader.Open(PathOf(SkQueuesName), ImageMagic.SkQueues);
        while (reader.TryRead(SkPacketEntry.Parser, out var entry))
            list.Add(new SkPacket(entry, reader.ReadPayload(entry.Length).ToArray()));
        return list;
    }

    public void WriteSkQueues(IEnumerable<SkPacket> packets)
    {
        using var writer = new ImageWriter(PathOf(SkQueuesName), ImageMagic.SkQueues);
        foreach (var p in packets)
        {
            if (p.Entry.Length != (uint)p.Data.Length)
                throw new ImageException(writer.Path, $"packet for socket {p.Entry.IdFor}: entry says {p.Entry.Length} bytes, data has {p.Data.Length}");
            writer.Write(p.Entry);
            writer.WritePayload(p.Data);
        }
    }

    // ---- other small images -------------------------------------------------

    /// <summary>An established connection's state and its two queues (CRIU's tcp-stream-INO.img).</summary>
    public TcpStream ReadTcpStream(uint ino)
    {
        var reader = ImageReader.Open(PathOf(TcpStreamName(ino)), ImageMagic.TcpStream);
        if (!reader.TryRead(TcpStreamEntry.Parser, out var e))
            throw new ImageException(PathOf(TcpStreamName(ino)), "no tcp_stream_entry");
        var inq = reader.ReadPayload(e.InqLen).ToArray();
        var outq = reader.ReadPayload(e.OutqLen).ToArray();
        return new TcpStream(e, inq, outq);
    }

    public void WriteTcpStream(uint ino, TcpStream s)
    {
        using var writer = new ImageWriter(PathOf(TcpStreamName(ino)), ImageMagic.TcpStream);
        if (s.Entry.InqLen != (uint)s.RecvQueue.Length || s.Entry.OutqLen != (uint)s.SendQueue.Length)
            throw new ImageException(writer.Path, $"tcp stream {ino:x}: queue lengths differ from the entry's");
        writer.Write(s.Entry);
        writer.WritePayload(s.RecvQueue);
        writer.WritePayload(s.SendQueue);
    }

    public SeccompEntry ReadSeccomp() => ReadSingle(SeccompName, ImageMagic.Seccomp, SeccompEntry.Parser);
    public void WriteSeccomp(SeccompEntry seccomp) => WriteSingle(SeccompName, ImageMagic.Seccomp, seccomp);

    public List<TtyInfoEntry> ReadTtyInfo() => Exists(TtyInfoName) ? ReadAll(TtyInfoName, ImageMagic.TtyInfo, TtyInfoEntry.Parser) : [];
    public void WriteTtyInfo(IEnumerable<TtyInfoEntry> ttys) => WriteAll(TtyInfoName, ImageMagic.TtyInfo, ttys);
    public List<TtyDataEntry> ReadTtyData() => Exists(TtyDataName) ? ReadAll(TtyDataName, ImageMagic.TtyData, TtyDataEntry.Parser) : [];
    public void WriteTtyData(IEnumerable<TtyDataEntry> data) => WriteAll(TtyDataName, ImageMagic.TtyData, data);

    public TimensEntry ReadTimens(uint id = 0) => ReadSingle(TimensName(id), ImageMagic.Timens, TimensEntry.Parser);
    public void WriteTimens(TimensEntry timens, uint id = 0) => WriteSingle(TimensName(id), ImageMagic.Timens, timens);

    public UtsnsEntry ReadUtsns(uint id) => ReadSingle(UtsnsName(id), ImageMagic.Utsns, UtsnsEntry.Parser);
    public void WriteUtsns(UtsnsEntry uts, uint id) => WriteSingle(UtsnsName(id), ImageMagic.Utsns, uts);

    public CpuinfoEntry ReadCpuinfo() => ReadSingle(CpuinfoName, ImageMagic.Cpuinfo, CpuinfoEntry.Parser);
    public void WriteCpuinfo(CpuinfoEntry cpuinfo) => WriteSingle(CpuinfoName, ImageMagic.Cpuinfo, cpuinfo);

    // ---- memory -----------------------------------------------------------

    /// <summary>Next pages id, 1 for the first pagemap created through this instance.</summary>
    public uint AllocatePagesId() => (uint)Interlocked.Increment(ref _lastPagesId);

    /// <summary>Starts pagemap-PID.img with a freshly allocated pages-N.img.</summary>
    public PagemapWriter CreatePagemap(int pid)
    {
        uint id = AllocatePagesId();
        return new PagemapWriter(PathOf(PagemapName(pid)), PathOf(PagesName(id)), id);
    }

    /// <summary>Opens pagemap-PID.img and the pages-N.img it names.</summary>
    public PagemapReader OpenPagemap(int pid) => PagemapReader.Open(PathOf(PagemapName(pid)), Path);

    // ---- helpers ------------------------------------------------------------

    private T ReadSingle<T>(string name, uint magic, MessageParser<T> parser) where T : IMessage<T>
        => ImageReader.ReadSingle(PathOf(name), magic, parser);

    private List<T> ReadAll<T>(string name, uint magic, MessageParser<T> parser) where T : IMessage<T>
        => ImageReader.ReadAll(PathOf(name), magic, parser);

    private void WriteSingle(string name, uint magic, IMessage message)
    {
        using var writer = new ImageWriter(PathOf(name), magic);
        writer.Write(message);
    }

    private void WriteAll<T>(string name, uint magic, IEnumerable<T> messages) where T : IMessage
    {
        using var writer = new ImageWriter(PathOf(name), magic);
        foreach (var m in messages)
            writer.Write(m);
    }
}
