using Crisp.Images;
using Crisp.Images.Pages;
using Crisp.Images.Proto;
using Crisp.Inject;
using Crisp.Native;
using Crisp.Native.ProcFs;

namespace Crisp.Checkpoint.Restore;

/// <summary>The address space: stub mappings out, vDSO moved, VMAs in, pages written, mm fields set.</summary>
internal sealed unsafe partial class RestoreSession
{

    private static bool IsSpecial(VmaEntry v) =>
        (v.Status & (VmaStatus.VMA_AREA_VDSO | VmaStatus.VMA_AREA_VVAR | VmaStatus.VMA_AREA_VSYSCALL)) != 0;

    /// <summary>Unmaps what the task had (the stub's, or a restored parent's mappings) but the control page, the vDSO and the VMAs it inherits.</summary>
    private void ClearStub(ProcessImage p, RestoreTask leader)
    {
        var keep = KeptRanges(p);
        foreach (var v in Proc.Maps(p.Pid))
        {
            if (v.IsVdso || v.IsVvar || v.IsVsyscall) continue;
            if (v.Start >= _c.Ctl && v.End <= _c.Ctl + CtlSize) continue;
            UnmapExcept(leader, v.Start, v.End, keep);
        }
    }

    /// <summary>
    /// Puts the running kernel's [vvar]/[vvar_vclock]/[vdso] where the process expects its vDSO.
    /// When the running vDSO matches the dumped one (same symbols at the same offsets, same sizes
    /// and vvar distance) it is moved to the dumped addresses; otherwise, or when
    /// RestoreOptions.ForceVdsoProxy asks for it, the dumped vDSO becomes a proxy (VdsoProxy.cs).
    /// </summary>
    private void MoveVdso(ProcessImage p, RestoreTask leader)
    {
        var now = Proc.Maps(p.Pid).Where(v => v.IsVvar || v.IsVdso).OrderBy(v => v.Start).ToList();
        var dumpedVvar = p.Mm.Vmas.Where(v => (v.Status & VmaStatus.VMA_AREA_VVAR) != 0).OrderBy(v => v.Start).ToList();
        var dumpedVdso = p.Mm.Vmas.Where(v => (v.Status & VmaStatus.VMA_AREA_VDSO) != 0).OrderBy(v => v.Start).ToList();
        var nowVvar = now.Where(v => v.IsVvar).ToList();
        var nowVdso = now.Where(v => v.IsVdso).ToList();
        if (dumpedVdso.Count == 0)
        {
            // Dumped without a vDSO: drop ours.
            foreach (var v in now) leader.Check(Code, "munmap vdso", LibC.SYS_munmap, (long)v.Start, (long)v.Length);
            return;
        }
        if (nowVdso.Count != 1) throw new CrispException($"this kernel gave the stub {nowVdso.Count} [vdso] mappings; crisp expects one");
        if (dumpedVdso.Count != 1) throw new CrispException($"the dump has {dumpedVdso.Count} vDSO areas; crisp expects one");
        for (int i = 1; i < dumpedVvar.Count; i++)
            if (dumpedVvar[i].Start != dumpedVvar[i - 1].End)
                throw new CrispException("the dumped [vvar] areas are not contiguous; cannot place this kernel's vvar there");
        ulong Sum(IEnumerable<ulong> xs) => xs.Aggregate(0UL, (a, b) => a + b);
        var vd = dumpedVdso[0];
        ulong dumpedVvarSize = Sum(dumpedVvar.Select(v => v.End - v.Start)), nowVvarSize = Sum(nowVvar.Select(v => v.Length));

        var mine = new byte[nowVdso[0].Length];
        RemoteMemory.Read(p.Pid, nowVdso[0].Start, mine);
        var dumped = ReadDumpedVdso(p, vd);
        var mySyms = VdsoSymbols.Read(mine) ?? throw new CrispException("cannot read the symbols of this kernel's vDSO");
        var dumpedSyms = dumped == null ? null : VdsoSymbols.Read(dumped);
        bool force = _o.ForceVdsoProxy;
        bool matches = dumpedSyms == null
            ? vd.End - vd.Start == nowVdso[0].Length && (dumpedVvar.Count == 0 || dumpedVvarSize == nowVvarSize)
            : VdsoProxy.Matches(dumpedSyms, mySyms, vd.End - vd.Start, nowVdso[0].Length, dumpedVvar.Count == 0 ? 0 : dumpedVvarSize, nowVvarSize,
                dumpedVvar.Count == 0 ? 0 : (long)vd.Start - (long)dumpedVvar[0].Start,
                nowVvar.Count == 0 ? 0 : (long)nowVdso[0].Start - (long)nowVvar[0].Start);
        if (matches && !force)
        {
            if (dumped != null && !dumped.AsSpan().SequenceEqual(mine))
            {
                int diff = 0;
                for (int i = 0; i < mine.Length; i++) if (mine[i] != dumped[i]) diff++;
                Log.I($"process {p.Pid}: vDSO code differs from the dumped one in {diff} bytes (CPU-specific patches); its {mySyms.Count} symbols match");
            }
            // Each piece keeps its distance to the vDSO, which matches the dump's.
            long shift = (long)vd.Start - (long)nowVdso[0].Start;
            MoveBlock(leader, now, v => (ulong)((long)v.Start + shift));
            _c.VdsoSyscall[p.Pid] = FindSyscall(mine, vd.Start);
            return;
        }
        if (dumped == null || dumpedSyms == null)
            throw new CrispException($"this kernel's vDSO differs from the dumped one and the dump holds no readable copy of the dumped vDSO at 0x{vd.Start:x} to proxy it");

        // Proxy: this kernel's block is parked where the dumped layout is free, the dumped vDSO
        // goes back at its address with every entry point jumping into the parked one.
        ulong blockStart = now[0].Start, blockSize = now[^1].End - blockStart;
        var busy = p.Mm.Vmas.Select(v => (v.Start, v.End)).Append((_c.PendingCtl, _c.PendingCtl + CtlBlockSize));
        var stack = p.Mm.Vmas.Where(v => (v.Flags & LibC.MAP_GROWSDOWN) != 0).OrderByDescending(v => v.End).FirstOrDefault();
        ulong park = VdsoProxy.ChoosePark(busy, blockSize, stack?.Start, StackRoom(p));
        MoveBlock(leader, now, v => park + (v.Start - blockStart));
        ulong parkedVdso = park + (nowVdso[0].Start - blockStart);
        var proxy = VdsoProxy.Redirect(dumped, vd.Start, dumpedSyms, mySyms, parkedVdso, out int redirected, out int fallbacks);
        ulong len = vd.End - vd.Start;
        leader.Check(Code, "mmap vdso proxy", LibC.SYS_mmap, (long)vd.Start, (long)len, LibC.PROT_READ | LibC.PROT_WRITE,
            LibC.MAP_PRIVATE | LibC.MAP_ANONYMOUS | LibC.MAP_FIXED, -1, 0);
        RemoteMemory.Write(p.Pid, vd.Start, proxy);
        leader.Check(Code, "mprotect vdso proxy", LibC.SYS_mprotect, (long)vd.Start, (long)len, vd.Prot);
        if (dumpedVvar.Count > 0)
            leader.Check(Code, "mmap vvar placeholder", LibC.SYS_mmap, (long)dumpedVvar[0].Start, (long)dumpedVvarSize, LibC.PROT_READ,
                LibC.MAP_PRIVATE | LibC.MAP_ANONYMOUS | LibC.MAP_FIXED, -1, 0);
        Log.I($"process {p.Pid}: vDSO proxy at 0x{vd.Start:x} ({redirected} entry points redirected to this kernel's vDSO at 0x{parkedVdso:x}, " +
              $"{fallbacks} to system calls){(force ? " (forced)" : "")}");
        _c.VdsoSyscall[p.Pid] = FindSyscall(mine, parkedVdso);
    }

    /// <summary>
    /// Moves [vvar]/[vvar_vclock]/[vdso] as one block, keeping their distances (the vDSO's code
    /// finds its data RIP-relative): first all to the temporary place, then each to
    /// <paramref name="target"/>, so no move lands on a piece not yet moved.
    /// </summary>
    private void MoveBlock(RestoreTask leader, List<Crisp.Native.ProcFs.Vma> pieces, Func<Crisp.Native.ProcFs.Vma, ulong> target)
    {
        var moves = new List<(ulong From, ulong Len, ulong To)>();
        ulong tmp = _c.Temp;
        foreach (var v in pieces)
        {
            leader.Check(Code, "mremap vdso (temporary)", LibC.SYS_mremap, (long)v.Start, (long)v.Length, (long)v.Length,
                LibC.MREMAP_MAYMOVE | LibC.MREMAP_FIXED, (long)tmp);
            moves.Add((tmp, v.Length, target(v)));
            tmp += v.Length;
        }
        foreach (var (from, len, to) in moves)
            leader.Check(Code, "mremap vdso", LibC.SYS_mremap, (long)from, (long)len, (long)len, LibC.MREMAP_MAYMOVE | LibC.MREMAP_FIXED, (long)to);
    }

    /// <summary>
    /// The dumped vDSO's bytes, or null when its first page (ELF header, symbols) is not in the
    /// pagemap. Pages the dump left out (older dumps took only pages the process had touched)
    /// read as int3: nothing can run there but the entry points, which the proxy overwrites.
    /// </summary>
    private byte[]? ReadDumpedVdso(ProcessImage p, VmaEntry vd)
    {
        if (!_c.Dir.Exists(ImageDir.PagemapName(p.DumpedPid))) return null;
        using var pm = _c.Dir.OpenPagemap(p.DumpedPid);
        if (!pm.IsPresent(vd.Start)) return null;
        var dumped = new byte[vd.End - vd.Start];
        for (ulong a = vd.Start; a < vd.End; a += PagemapRun.PageSize)
        {
            var page = dumped.AsSpan((int)(a - vd.Start), PagemapRun.PageSize);
            if (pm.IsPresent(a)) pm.Read(a, page);
            else page.Fill(0xCC);
        }
        return dumped;
    }

    /// <summary>Room the stack may grow into: its soft RLIMIT_STACK as dumped (8 MiB when unknown or unlimited), capped at 1 GiB.</summary>
    private static ulong StackRoom(ProcessImage p)
    {
        const int RLIMIT_STACK = 3;
        var rl = p.LeaderCore.Tc?.Rlimits?.Rlimits;
        ulong cur = rl != null && rl.Count > RLIMIT_STACK ? rl[RLIMIT_STACK].Cur : 8UL << 20;
        return Math.Min(cur, 1UL << 30);
    }


    /// <summary>
    /// A <c>syscall</c> instruction (the bytes 0f 05 anywhere: the task stops at the call's exit
    /// and its registers are replaced, so what follows never runs) in an executable mapping
    /// of a file mapped by the restored process, or 0.
    /// </summary>
    private ulong FindSyscallInText(ProcessImage p)
    {
        foreach (var v in Proc.Maps(p.Pid))
        {
            // File text only: anonymous code may be lazy, and reading it would wait on the daemon.
            if ((v.Prot & LibC.PROT_EXEC) == 0 || (v.Prot & LibC.PROT_READ) == 0 || v.Inode == 0) continue;
            var code = new byte[Math.Min(v.Length, 1UL << 20)];
            try { RemoteMemory.Read(p.Pid, v.Start, code); }
            catch (SyscallException) { continue; }
            ulong at = FindSyscall(code, v.Start);
            if (at != 0) return at;
        }
        return 0;
    }

    private static ulong FindSyscall(byte[] code, ulong start)
    {
        for (int i = 0; i + 1 < code.Length; i++)
            if (code[i] == 0x0f && code[i + 1] == 0x05) return start + (ulong)i;
        return 0;
    }

    private string FilePath(uint id, string what)
    {
        if (!_c.Files.TryGetValue(id, out var f) || f.Reg == null)
            throw new ImageException(_c.Dir.PathOf(ImageDir.FilesName), $"{what}: no regular file with id {id}");
        return f.Reg.Name;
    }

    /// <summary>Checks that a file a mapping or the exe needs is still there with its dumped size.</summary>
    private void CheckFile(uint id, string what)
    {
        var reg = _c.Files[id].Reg;
        string path = reg.Name;
        var info = new FileInfo(path);
        if (!info.Exists) throw new CrispException($"file {path} is gone ({what})");
        if (reg.HasSize && (ulong)info.Length != reg.Size)
            throw new CrispException($"file {path} changed size: {reg.Size} bytes at dump, {info.Length} now ({what})");
    }


    private static bool HasPages(Crisp.Images.Pages.PagemapReader? pm, VmaEntry v)
    {
        if (pm == null) return false;
        for (int i = 0; i < pm.Runs.Count; i++)
        {
            var r = pm.Runs[i];
            if (r.IsPresent && r.Vaddr < v.End && v.Start < r.End) return true;
        }
        return false;
    }

    private void MapVmas(ProcessImage p, RestoreTask leader, Dictionary<uint, int> fileFds)
    {
        using var pm = _c.Dir.Exists(ImageDir.PagemapName(p.DumpedPid)) ? _c.Dir.OpenPagemap(p.DumpedPid) : null;
        var scratch = new Scratch(this, p.Pid);
        foreach (var v in p.Mm.Vmas)
        {
            if (IsSpecial(v) || IsInherited(p, v)) continue;
            if (v.Start < _c.Ctl + CtlSize && _c.Ctl < v.End)
                throw new CrispException($"VMA 0x{v.Start:x}-0x{v.End:x} overlaps the control page (internal error)");
            if ((v.Status & VmaStatus.VMA_AREA_SYSVIPC) != 0) { AttachSysvShm(p, leader, v); continue; }
            int flags = (int)v.Flags | LibC.MAP_FIXED;
            int prot = (int)v.Prot;
            // An AIO ring is filled as private memory first; its new context moves onto it (RestoreAio.cs).
            if (IsAioRing(v)) flags = (flags & ~LibC.MAP_SHARED) | LibC.MAP_PRIVATE | LibC.MAP_ANONYMOUS;
            // A private VMA without PROT_WRITE that holds dumped (COW'd) pages was writable once: map it
            // writable, fill it, mprotect it after. That also gives it VM_ACCOUNT as in the original,
            // which keeps it from merging with a never-written neighbour (/proc/PID/maps stays equal).
            if ((prot & LibC.PROT_WRITE) == 0 && (v.Flags & LibC.MAP_SHARED) == 0 && HasPages(pm, v))
            {
                prot |= LibC.PROT_WRITE;
                _c.WriteFirst.Add(v);
            }
            long fd = -1;
            bool fileBacked = (v.Status & (VmaStatus.VMA_FILE_PRIVATE | VmaStatus.VMA_FILE_SHARED)) != 0;
            if (fileBacked)
            {
                uint id = (uint)v.Shmid;
                if (!fileFds.TryGetValue(id, out var ffd) && _c.Files.TryGetValue(id, out var mf) && mf.Type == FdTypes.Memfd)
                {
                    // A shared mapping that may be written needs a read-write description. CRIU writes a
                    // mapping-only memfd's file entry read-only and says read-write in the VMA's fdflags.
                    bool shared = (v.Flags & LibC.MAP_SHARED) != 0;
                    bool rw = shared && ((v.Prot & LibC.PROT_WRITE) != 0 || (v.HasFdflags && (v.Fdflags & LibC.O_ACCMODE) == LibC.O_RDWR));
                    uint? openFlags = rw ? (mf.Memfd.Flags & ~(uint)LibC.O_ACCMODE) | (uint)LibC.O_RDWR : null;
                    ffd = MemfdIntoTask(leader, mf.Memfd, $"memfd mapped at 0x{v.Start:x} in process {p.Pid}", openFlags);
                    fileFds[id] = ffd;
                }
                else if (!fileFds.TryGetValue(id, out ffd))
                {
                    string path = FilePath(id, $"VMA 0x{v.Start:x}");
                    CheckFile(id, $"mapped at 0x{v.Start:x}");
                    // Read-write when a shared mapping of it may be written (now, or after an mprotect: CRIU's fdflags say O_RDWR).
                    bool rw = p.Mm.Vmas.Any(x => x.Shmid == id && (x.Status & VmaStatus.VMA_FILE_SHARED) != 0 &&
                        ((x.Prot & LibC.PROT_WRITE) != 0 || (x.HasFdflags && (x.Fdflags & LibC.O_ACCMODE) == LibC.O_RDWR)));
                    scratch = new Scratch(this, p.Pid);
                    ulong at = scratch.PutString(path);
                    ffd = (int)leader.Check(Code, $"openat {path}", LibC.SYS_openat, -100, (long)at,
                        (rw ? LibC.O_RDWR : LibC.O_RDONLY) | LibC.O_CLOEXEC, 0);
                    fileFds[id] = ffd;
                }
                fd = ffd;
                flags &= ~LibC.MAP_ANONYMOUS;
            }
            bool sharedAnon = IsSharedAnon(v), socketMap = IsSocketMap(v);
            if (sharedAnon || socketMap)
            {
                fd = sharedAnon ? SharedAnonIntoTask(p, leader, v) : PacketRingIntoTask(p, leader, v);
                flags &= ~LibC.MAP_ANONYMOUS;
            }
            long r = leader.Call(Code, LibC.SYS_mmap, (long)v.Start, (long)(v.End - v.Start), prot, flags, fd, fileBacked || sharedAnon || socketMap ? (long)v.Pgoff : 0);
            if (sharedAnon || socketMap) leader.Call(Code, LibC.SYS_close, fd);
            Errno.CheckRaw(r, "mmap", $"VMA 0x{v.Start:x}-0x{v.End:x} in process {p.Pid}");
            if ((ulong)r != v.Start) throw new CrispException($"mmap placed VMA 0x{v.Start:x} at 0x{r:x}");
            if (v.HasMadv && v.Madv != 0)
                foreach (int adv in new[] { LibC.MADV_RANDOM, LibC.MADV_SEQUENTIAL, LibC.MADV_MERGEABLE, LibC.MADV_HUGEPAGE, LibC.MADV_NOHUGEPAGE, LibC.MADV_DONTDUMP, LibC.MADV_WIPEONFORK, LibC.MADV_DONTFORK })
                    if ((v.Madv & (1UL << adv)) != 0)
                        leader.Check(Code, $"madvise(0x{v.Start:x}, {adv})", LibC.SYS_madvise, (long)v.Start, (long)(v.End - v.Start), adv);
        }
        // The files step starts by closing every fd but the inherited ones: a pidfd opened here is gone then.
        if (_c.SelfPidfd < 0) ForgetCrispPidfd(p, leader);
    }

    /// <summary>
    /// Writes the pagemap's present pages. Pages are read from the pages file with pread into
    /// reused buffers and written with process_vm_writev (PageWriter), not taken from a mapping
    /// of the file: on this kind of machine the first access to each page of a fresh mapping
    /// costs more than the copy (docs/BENCHMARKS.md). Pages of VMAs without PROT_WRITE go
    /// through /proc/PID/mem, which ignores protection.
    /// </summary>
    private void WritePages(ProcessImage p)
    {
        // Inherited VMAs (RestoreCow.cs) get only the pages that differ from the parent's.
        if (!_c.Dir.Exists(ImageDir.PagemapName(p.DumpedPid))) { WriteInheritedPages(p, null); return; }
        using var pm = _c.Dir.OpenPagemap(p.DumpedPid);
        WriteInheritedPages(p, pm);
        if (pm.PagesFileLength == 0) return;
        // Lazy VMAs are left out: their pages come from the lazy-pages daemon, and runs inside them are skipped below.
        var vmas = p.Mm.Vmas.Where(v => !IsSpecial(v) && !IsLazyVma(v) && !IsInherited(p, v)).OrderBy(v => v.Start).ToList();
        if (vmas.Count == 0) return;
        var segs = new List<PageWriter.Seg>();
        // Whole 2 MiB blocks go in as huge pages after the rest (RestoreHuge.cs).
        var blocks = HugeBlocks(p, pm, vmas);
        var isBlock = blocks.Select(b => b.Dst).ToHashSet();
        void AddWritable(ulong a, ulong len, long off)
        {
            if (len > 0) segs.Add(new PageWriter.Seg(a, off, len));
        }
        ProcMem? mem = null;
        int vi = 0;
        try
        {
            foreach (var run in pm.Runs)
            {
                if (!run.IsPresent) continue;
                ulong a = run.Vaddr;
                while (a < run.End)
                {
                    while (vi < vmas.Count && vmas[vi].End <= a) vi++;
                    if (vi >= vmas.Count || vmas[vi].Start > a)
                    {
                        // Not in a restorable VMA (e.g. the vDSO, checked already): skip to the next VMA.
                        ulong next = vi < vmas.Count ? Math.Min(vmas[vi].Start, run.End) : run.End;
                        a = next;
                        continue;
                    }
                    var v = vmas[vi];
                    ulong end = Math.Min(run.End, v.End);
                    long off = run.FileOffset + (long)(a - run.Vaddr);
                    bool writable = (v.Prot & LibC.PROT_WRITE) != 0 || _c.WriteFirst.Contains(v);
                    if (writable && isBlock.Count > 0)
                    {
                        // Leave out the blocks that move in whole.
                        ulong s = a;
                        for (ulong b = (a + HugeSize - 1) & ~(HugeSize - 1); b + HugeSize <= end; b += HugeSize)
                        {
                            if (!isBlock.Contains(b)) continue;
                            AddWritable(s, b - s, off + (long)(s - a));
                            s = b + HugeSize;
                        }
                        AddWritable(s, end - s, off + (long)(s - a));
                    }
                    else if (writable) AddWritable(a, end - a, off);
                    else
                    {
                        mem ??= new ProcMem(p.Pid);
                        var buf = new byte[end - a];
                        pm.ReadPagesAt(off, buf);
                        mem.Write(a, buf);
                    }
                    a = end;
                }
            }
        }
        finally { mem?.Dispose(); }
        PageWriter.Write(p.Pid, pm, segs);
        if (blocks.Count > 0 && !MoveHuge(p, _c.Tasks[p.Pid], pm, blocks))
        {
            segs.Clear();
            foreach (var (dst, off) in blocks) AddWritable(dst, HugeSize, off);
            PageWriter.Write(p.Pid, pm, segs);
        }
        else if (blocks.Count > 0)
            Log.I($"process {p.Pid}: {blocks.Count} blocks of 2 MiB restored as huge pages");
    }

    private void SetMm(ProcessImage p, RestoreTask leader, Dictionary<uint, int> fileFds)
    {
        var mm = p.Mm;
        var scratch = new Scratch(this, p.Pid);
        int exeFd = -1;
        if (mm.ExeFileId != 0)
        {
            if (!fileFds.TryGetValue(mm.ExeFileId, out exeFd))
            {
                string path = FilePath(mm.ExeFileId, "exe file");
                CheckFile(mm.ExeFileId, "the executable");
                exeFd = (int)leader.Check(Code, $"openat {path}", LibC.SYS_openat, -100, (long)scratch.PutString(path), LibC.O_RDONLY | LibC.O_CLOEXEC, 0);
                fileFds[mm.ExeFileId] = exeFd;
            }
        }
        var auxv = new byte[mm.MmSavedAuxv.Count * 8];
        for (int i = 0; i < mm.MmSavedAuxv.Count; i++) BitConverter.TryWriteBytes(auxv.AsSpan(i * 8), mm.MmSavedAuxv[i]);
        ulong auxvAt = auxv.Length > 0 ? scratch.Put(auxv) : 0;
        var map = new LibC.prctl_mm_map
        {
            start_code = mm.MmStartCode, end_code = mm.MmEndCode, start_data = mm.MmStartData, end_data = mm.MmEndData,
            start_brk = mm.MmStartBrk, brk = mm.MmBrk, start_stack = mm.MmStartStack, arg_start = mm.MmArgStart, arg_end = mm.MmArgEnd,
            env_start = mm.MmEnvStart, env_end = mm.MmEnvEnd, auxv = auxvAt, auxv_size = (uint)auxv.Length, exe_fd = exeFd,
        };
        ulong mapAt = scratch.PutStruct(map);
        leader.Check(Code, "prctl(PR_SET_MM, PR_SET_MM_MAP)", LibC.SYS_prctl, LibC.PR_SET_MM, LibC.PR_SET_MM_MAP, (long)mapAt, sizeof(LibC.prctl_mm_map), 0);
        if (mm.HasDumpable && mm.Dumpable != 1)
            leader.Call(Code, LibC.SYS_prctl, LibC.PR_SET_DUMPABLE, mm.Dumpable);
        if (mm.HasThpDisabled && mm.ThpDisabled)
            leader.Check(Code, "prctl(PR_SET_THP_DISABLE)", LibC.SYS_prctl, LibC.PR_SET_THP_DISABLE, 1);
    }
}
