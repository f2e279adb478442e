using System.Text.Json;
using Crisp.Images.Proto;
using Xunit;

namespace Crisp.Images.Tests;

/// <summary>
/// Images written by CRIU 4.2 (../shared/reference-images from the repository root)
/// read into the same values crit shows, and survive a read/write round trip
/// with crit's decoding unchanged.
/// </summary>
[Trait("Category", "Unit")]
public class ReferenceImageTests
{
    private static readonly string Root = Repo.ReferenceImages;

    public static TheoryData<string> Dumps()
    {
        var data = new TheoryData<string>();
        foreach (var d in Directory.GetDirectories(Root).OrderBy(d => d))
            if (Directory.Exists(Path.Combine(d, "img")))
                data.Add(Path.GetFileName(d));
        return data;
    }

    private static JsonElement JsonOf(string dump, string image) =>
        JsonDocument.Parse(File.ReadAllText(Path.Combine(Root, dump, "json", Path.ChangeExtension(image, ".json")))).RootElement;

    private static IEnumerable<string> Images(string dump, string prefix) =>
        Directory.GetFiles(Path.Combine(Root, dump, "img"), prefix + "*.img").Select(Path.GetFileName).OrderBy(n => n)!;

    private static int IdOf(string fileName) => int.Parse(Path.GetFileNameWithoutExtension(fileName).Split('-')[^1]);

    [Fact]
    public void ReferenceImagesAreThere() => Assert.True(Directory.GetDirectories(Root, "*").Count(d => Directory.Exists(Path.Combine(d, "img"))) >= 4, $"expected the reference dumps in {Root}");

    [Theory]
    [MemberData(nameof(Dumps))]
    public void InventoryAndPstreeMatchCrit(string dump)
    {
        var dir = new ImageDir(Path.Combine(Root, dump, "img"));

        var inv = dir.ReadInventory();
        var j = JsonOf(dump, "inventory.img").Entries()[0];
        Assert.Equal(j.U64("img_version"), inv.ImgVersion);
        Assert.Equal(2u, inv.ImgVersion);
        Assert.True(inv.FdinfoPerId);
        Assert.True(inv.NsPerId);
        Assert.Equal(j.At("root_ids").U64("vm_id"), inv.RootIds.VmId);
        Assert.Equal(j.At("root_ids").U64("mnt_ns_id"), inv.RootIds.MntNsId);
        Assert.Equal(j.Str("dump_criu_run_id"), inv.DumpCriuRunId);
        Assert.NotNull(inv.PluginsEntry);

        var tree = dir.ReadPstree();
        var jt = JsonOf(dump, "pstree.img").Entries();
        Assert.Equal(jt.GetArrayLength(), tree.Count);
        for (int i = 0; i < tree.Count; i++)
        {
            Assert.Equal(jt[i].U64("pid"), tree[i].Pid);
            Assert.Equal(jt[i].U64("ppid"), tree[i].Ppid);
            Assert.Equal(jt[i].U64("sid"), tree[i].Sid);
            Assert.Equal(jt[i].At("threads").EnumerateArray().Select(t => (uint)t.U64()), tree[i].Threads);
        }
    }

    [Theory]
    [MemberData(nameof(Dumps))]
    public void CoreMatchesCrit(string dump)
    {
        var dir = new ImageDir(Path.Combine(Root, dump, "img"));
        var cores = Images(dump, "core-").ToList();
        Assert.NotEmpty(cores);
        // Every thread listed in pstree has a core image.
        var tids = dir.ReadPstree().SelectMany(t => t.Threads).Select(t => ImageDir.CoreName((int)t)).OrderBy(n => n);
        Assert.Equal(tids, cores);

        foreach (var name in cores)
        {
            var core = dir.ReadCore(IdOf(name));
            var j = JsonOf(dump, name).Entries()[0];
            Assert.Equal(CoreEntry.Types.March.X8664, core.Mtype);
            var regs = core.ThreadInfo.Gpregs;
            var jr = j.At("thread_info").At("gpregs");
            Assert.Equal(jr.U64("ip"), regs.Ip);
            Assert.Equal(jr.U64("sp"), regs.Sp);
            Assert.Equal(jr.U64("ax"), regs.Ax);
            Assert.Equal(jr.U64("orig_ax"), regs.OrigAx);
            Assert.Equal(jr.U64("fs_base"), regs.FsBase);
            Assert.Equal(UserX86RegsMode.Native, regs.Mode);
            Assert.Equal(j.At("thread_info").U64("clear_tid_addr"), core.ThreadInfo.ClearTidAddr);

            var fp = core.ThreadInfo.Fpregs;
            var jf = j.At("thread_info").At("fpregs");
            Assert.Equal(jf.U64("mxcsr"), fp.Mxcsr);
            Assert.Equal(32, fp.StSpace.Count);
            Assert.Equal(64, fp.XmmSpace.Count);
            Assert.Equal(jf.At("xmm_space").EnumerateArray().Select(x => (uint)x.U64()), fp.XmmSpace);
            Assert.Equal(jf.At("xsave").U64("xstate_bv"), fp.Xsave.XstateBv);
            Assert.Equal(64, fp.Xsave.YmmhSpace.Count);
            Assert.Equal(jf.At("xsave").At("hi16_zmm").EnumerateArray().Select(x => x.U64()), fp.Xsave.Hi16Zmm);
            Assert.NotNull(fp.Xsave.Cet); // a CRIU 4.x field crit 3.17 does not know

            var jc = j.At("thread_core");
            var tc = core.ThreadCore;
            Assert.Equal(jc.U64("futex_rla"), tc.FutexRla);
            Assert.Equal(jc.At("sas").U64("ss_flags"), tc.Sas.SsFlags);
            Assert.Equal(jc.At("creds").At("cap_eff").EnumerateArray().Select(x => (uint)x.U64()), tc.Creds.CapEff);
            Assert.Equal(jc.At("rseq_entry").U64("rseq_abi_pointer"), tc.RseqEntry.RseqAbiPointer);
            Assert.Equal(jc.Str("comm"), tc.Comm);

            if (j.TryGetProperty("tc", out var jtc))
            {
                Assert.Equal(TaskStates.Alive, core.Tc.TaskState);
                Assert.Equal(jtc.Str("comm"), core.Tc.Comm);
                Assert.Equal(jtc.U64("blk_sigset"), core.Tc.BlkSigset);
                Assert.Equal(jtc.At("sigactions").GetArrayLength(), core.Tc.Sigactions.Count);
                var jsa = jtc.At("sigactions").EnumerateArray().ToList();
                for (int i = 0; i < jsa.Count; i++)
                {
                    Assert.Equal(jsa[i].U64("sigaction"), core.Tc.Sigactions[i].Sigaction);
                    Assert.Equal(jsa[i].U64("flags"), core.Tc.Sigactions[i].Flags);
                    Assert.Equal(jsa[i].U64("mask"), core.Tc.Sigactions[i].Mask);
                }
                var jrl = jtc.At("rlimits").At("rlimits").EnumerateArray().ToList();
                Assert.Equal(jrl.Count, core.Tc.Rlimits.Rlimits.Count);
                for (int i = 0; i < jrl.Count; i++)
                    Assert.Equal((jrl[i].U64("cur"), jrl[i].U64("max")), (core.Tc.Rlimits.Rlimits[i].Cur, core.Tc.Rlimits.Rlimits[i].Max));
            }
            else
            {
                Assert.Null(core.Tc); // non-leader threads carry no task_core
            }
        }
    }

    [Theory]
    [MemberData(nameof(Dumps))]
    public void MmIdsFsMatchCrit(string dump)
    {
        var dir = new ImageDir(Path.Combine(Root, dump, "img"));
        foreach (var name in Images(dump, "mm-"))
        {
            int pid = IdOf(name);
            var mm = dir.ReadMm(pid);
            var j = JsonOf(dump, name).Entries()[0];
            Assert.Equal(j.U64("mm_start_code"), mm.MmStartCode);
            Assert.Equal(j.U64("mm_brk"), mm.MmBrk);
            Assert.Equal(j.U64("exe_file_id"), mm.ExeFileId);
            Assert.Equal(j.At("mm_saved_auxv").EnumerateArray().Select(x => x.U64()), mm.MmSavedAuxv);
            var jv = j.At("vmas").EnumerateArray().ToList();
            Assert.Equal(jv.Count, mm.Vmas.Count);
            for (int i = 0; i < jv.Count; i++)
            {
                var v = mm.Vmas[i];
                Assert.Equal(jv[i].U64("start"), v.Start);
                Assert.Equal(jv[i].U64("end"), v.End);
                Assert.Equal(jv[i].U64("pgoff"), v.Pgoff);
                Assert.Equal((long)jv[i].At("fd").GetInt64(), v.Fd);
                Assert.Equal(StatusFromCrit(jv[i].Str("status")), v.Status);
            }
            Assert.Contains(mm.Vmas, v => VmaStatus.Has(v.Status, VmaStatus.VMA_AREA_VDSO));
            Assert.Contains(mm.Vmas, v => VmaStatus.Has(v.Status, VmaStatus.VMA_AREA_VVAR));
            Assert.Contains(mm.Vmas, v => VmaStatus.Has(v.Status, VmaStatus.VMA_AREA_VSYSCALL));

            var ids = dir.ReadIds(pid);
            var ji = JsonOf(dump, ImageDir.IdsName(pid)).Entries()[0];
            Assert.Equal(ji.U64("vm_id"), ids.VmId);
            Assert.Equal(ji.U64("files_id"), ids.FilesId);
            Assert.Equal(ji.U64("time_ns_id"), ids.TimeNsId);

            var fs = dir.ReadFs(pid);
            var jfs = JsonOf(dump, ImageDir.FsName(pid)).Entries()[0];
            Assert.Equal(jfs.U64("cwd_id"), fs.CwdId);
            Assert.Equal(jfs.U64("root_id"), fs.RootId);
            Assert.Equal(jfs.U64("umask"), fs.Umask);
        }
    }

    private static uint StatusFromCrit(string text)
    {
        uint bits = 0;
        foreach (var part in text.Split('|', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
        {
            if (part.StartsWith("0x"))
                bits |= Convert.ToUInt32(part[2..], 16);
            else
                bits |= (uint)typeof(VmaStatus).GetField(part)!.GetValue(null)!;
        }
        return bits;
    }

    [Theory]
    [MemberData(nameof(Dumps))]
    public void FilesAndFdinfoMatchCrit(string dump)
    {
        var dir = new ImageDir(Path.Combine(Root, dump, "img"));
        var files = dir.ReadFiles();
        var jf = JsonOf(dump, ImageDir.FilesName).Entries().EnumerateArray().ToList();
        Assert.Equal(jf.Count, files.Count);
        for (int i = 0; i < jf.Count; i++)
        {
            Assert.Equal(jf[i].U64("id"), files[i].Id);
            Assert.Equal(jf[i].Str("type"), files[i].Type.ToString().ToUpperInvariant());
            if (files[i].Type == FdTypes.Reg)
            {
                Assert.Equal(jf[i].At("reg").Str("name"), files[i].Reg.Name);
                Assert.Equal(jf[i].At("reg").U64("pos"), files[i].Reg.Pos);
                Assert.Equal(jf[i].At("reg").U64("mode"), files[i].Reg.Mode);
            }
            else if (files[i].Type == FdTypes.Pipe)
            {
                Assert.Equal(jf[i].At("pipe").U64("pipe_id"), files[i].Pipe.PipeId);
                Assert.Equal(jf[i].At("pipe").U64("flags"), files[i].Pipe.Flags);
            }
        }

        foreach (var name in Images(dump, "fdinfo-"))
        {
            var fds = dir.ReadFdinfo((uint)IdOf(name));
            var jd = JsonOf(dump, name).Entries().EnumerateArray().ToList();
            Assert.Equal(jd.Count, fds.Count);
            for (int i = 0; i < jd.Count; i++)
            {
                Assert.Equal(jd[i].U64("fd"), fds[i].Fd);
                Assert.Equal(jd[i].U64("id"), fds[i].Id);
                Assert.Equal(jd[i].Str("type"), fds[i].Type.ToString().ToUpperInvariant());
                Assert.Contains(files, f => f.Id == fds[i].Id);
            }
        }
        // fdinfo is per files_id: each task's table is found through its ids image.
        foreach (var name in Images(dump, "ids-"))
            Assert.True(dir.Exists(ImageDir.FdinfoName(dir.ReadIds(IdOf(name)).FilesId)));

        Assert.NotNull(dir.ReadSeccomp());
        var timens = dir.ReadTimens();
        Assert.Equal(JsonOf(dump, "timens-0.img").Entries()[0].At("monotonic").U64("tv_sec"), timens.Monotonic.TvSec);
    }

    [Theory]
    [MemberData(nameof(Dumps))]
    public void PagemapMatchesCritAndPagesFile(string dump)
    {
        var dir = new ImageDir(Path.Combine(Root, dump, "img"));
        foreach (var name in Images(dump, "pagemap-"))
        {
            using var pm = dir.OpenPagemap(IdOf(name));
            var j = JsonOf(dump, name).Entries().EnumerateArray().ToList();
            Assert.Equal(j[0].U64("pages_id"), pm.PagesId);
            Assert.Equal(j.Count - 1, pm.Runs.Count);
            for (int i = 0; i < pm.Runs.Count; i++)
            {
                Assert.Equal(j[i + 1].U64("vaddr"), pm.Runs[i].Vaddr);
                Assert.Equal(j[i + 1].U64("nr_pages"), pm.Runs[i].NrPages);
                Assert.Equal(0ul, j[i + 1].U64("compat_nr_pages")); // CRIU 4.2 leaves the old field 0
                Assert.True(pm.Runs[i].IsPresent);
            }
            Assert.Equal(pm.PagesFileLength, (long)pm.PresentPages * 4096);

            // Runs may span adjacent VMAs, but every page of a run lies inside some VMA.
            var mm = dir.ReadMm(IdOf(name));
            foreach (var run in pm.Runs)
                for (ulong a = run.Vaddr; a < run.End; a += 4096)
                    Assert.Contains(mm.Vmas, v => v.Start <= a && a < v.End);
        }
    }

    [Fact]
    public void MemtouchBufferHoldsItsPattern()
    {
        // memtouch.c fills a 1 MiB buffer with word i = pat(i). CRIU split it
        // over two adjacent pagemap entries, so a 1 MiB read crosses runs.
        static ulong Pat(ulong i) => (i * 0x9E3779B97F4A7C15UL) ^ 0xC0FFEE1234567UL;
        var dir = new ImageDir(Path.Combine(Root, "memtouch-1mib", "img"));
        int pid = IdOf(Images("memtouch-1mib", "pagemap-").Single());
        using var pm = dir.OpenPagemap(pid);
        var first = new byte[16];
        var start = pm.Runs.Where(r => r.IsPresent).Select(r => r.Vaddr).Single(a =>
        {
            pm.Read(a, first);
            return BitConverter.ToUInt64(first, 0) == Pat(0) && BitConverter.ToUInt64(first, 8) == Pat(1);
        });
        Assert.True(pm.IndexOf(start + (1 << 20) - 1) > pm.IndexOf(start), "the buffer should span two runs");
        var buffer = new byte[1 << 20];
        pm.Read(start, buffer);
        for (int i = 0; i < buffer.Length / 8; i++)
            Assert.Equal(Pat((ulong)i), BitConverter.ToUInt64(buffer, i * 8));
        var page = new byte[4096];
        for (int p = 0; p < 256; p += 17)
        {
            pm.Read(start + (ulong)p * 4096, page);
            Assert.True(page.AsSpan().SequenceEqual(buffer.AsSpan(p * 4096, 4096)));
        }
        Assert.True(pm.TryGetFileOffset(start, out long offset));
        var raw = File.ReadAllBytes(pm.PagesPath).AsSpan((int)offset, buffer.Length);
        Assert.True(raw.SequenceEqual(buffer));
    }

    public static TheoryData<string, string> AllImages()
    {
        var data = new TheoryData<string, string>();
        foreach (var d in Directory.GetDirectories(Root).OrderBy(d => d))
            foreach (var f in Directory.GetFiles(Path.Combine(d, "img"), "*.img").OrderBy(f => f))
                if (!Path.GetFileName(f).StartsWith("pages-"))
                    data.Add(Path.GetFileName(d), Path.GetFileName(f));
        return data;
    }

    [Theory]
    [MemberData(nameof(AllImages))]
    public void RoundTripDecodesIdenticallyWithCrit(string dump, string image)
    {
        string original = Path.Combine(Root, dump, "img", image);
        var (magic, records) = AnyImage.Read(original);
        Assert.NotEmpty(records);
        using var tmp = new TempDir();
        string copy = tmp.File(image);
        AnyImage.Write(copy, magic, records);
        Assert.Equal(Crit.Decode(original), Crit.Decode(copy));
        // Unknown (newer) fields survive too, so the bytes carry the same information.
        var (magic2, records2) = AnyImage.Read(copy);
        Assert.Equal(magic, magic2);
        Assert.Equal(records, records2);
    }
}
