using Crisp.Images;
using Crisp.Images.Pages;
using Crisp.Images.Proto;
using Crisp.LazyPages;

namespace Crisp.LazyPages.Tests;

/// <summary>Plans and pages from image directories: CRIU's own images, and ours served to a live process.</summary>
public sealed class ImagesTests
{
    private static readonly string Reference = FindReference();

    /// <summary>The CRIU reference image, at ../shared from the repository root.</summary>
    private static string FindReference()
    {
        if (Environment.GetEnvironmentVariable("CRISP_SHARED") is { Length: > 0 } shared)
            return Path.Combine(shared, "reference-images", "memtouch-1mib", "img");
        var d = new DirectoryInfo(AppContext.BaseDirectory);
        while (d != null && !File.Exists(Path.Combine(d.FullName, "crisp.slnx"))) d = d.Parent;
        if (d == null) throw new InvalidOperationException("repository root not found");
        return Path.GetFullPath(Path.Combine(d.FullName, "..", "shared", "reference-images", "memtouch-1mib", "img"));
    }

    [Fact]
    public void Plan_from_a_CRIU_image_takes_private_anonymous_VMAs_only()
    {
        var plan = LocalImages.Plan(new ImageDir(Reference), 17930);
        Assert.Equal(17930, plan.ImagePid);
        // the 1 MiB buffer (with malloc's guard) and the heap are lazy; vdso, vvar, vsyscall, files are not
        Assert.Contains(new LazyVma(0x7f796aa61000, 0x7f796ab64000), plan.Vmas);
        Assert.Contains(new LazyVma(0x564a0c3e0000, 0x564a0c401000), plan.Vmas);
        Assert.DoesNotContain(plan.Vmas, v => v.Start == 0x7f796ad58000 || v.Start == 0x7f796ad52000 || v.Start == 0xffffffffff600000);
        Assert.DoesNotContain(plan.Vmas, v => v.Start == 0x5649e7470000);
        Assert.Contains(new PageRange(0x7f796aa61000, 254), plan.DataRuns);
        Assert.DoesNotContain(plan.DataRuns, r => r.Vaddr == 0x7f796ad58000 || r.Vaddr == 0x5649e7470000);
        var pending = plan.ToPending();
        Assert.Equal(plan.DataPages, pending.Pages);
    }

    [Fact]
    public void Image_page_source_reads_the_bytes_CRIU_stored()
    {
        using var source = new ImagePageSource(Reference);
        using var ch = source.OpenChannel();
        var page = new byte[8192];
        ch.Read(17930, 0x7f796aa61000, page);
        // pagemap order: 1 + 2 + 2 present pages come before this run in pages-1.img
        using var raw = File.OpenRead(Path.Combine(Reference, "pages-1.img"));
        raw.Position = 5 * 4096;
        var want = new byte[8192];
        raw.ReadExactly(want);
        Assert.Equal(want, page);
        Assert.Contains(page, b => b != 0);
        var ex = Assert.Throws<Crisp.Images.PageSourceException>(() => ch.Read(17930, 0x1000, new byte[4096]));
        Assert.Contains("17930", ex.Message);
        Assert.Throws<Crisp.Images.PageSourceException>(() => ch.Read(999999, 0x7f796aa61000, new byte[4096]));
    }

    [Fact]
    public void A_process_is_served_from_a_local_images_directory()
    {
        const ulong Base = 0x600000000000UL, Pages = 8192, HoleStart = 1000, HoleEnd = 1100;
        const int imagePid = 4242;
        var dirPath = Directory.CreateTempSubdirectory("crisp-lazy-img-").FullName;
        try
        {
            var dir = new ImageDir(dirPath);
            var vma = new VmaEntry { Start = Base, End = Base + Pages * 4096, Pgoff = 0, Shmid = 0, Prot = 3, Flags = 0x22,
                Status = VmaStatus.VMA_AREA_REGULAR | VmaStatus.VMA_ANON_PRIVATE, Fd = -1 };
            var mm = new MmEntry { MmStartCode = 0, MmEndCode = 0, MmStartData = 0, MmEndData = 0, MmStartStack = 0,
                MmStartBrk = 0, MmBrk = 0, MmArgStart = 0, MmArgEnd = 0, MmEnvStart = 0, MmEnvEnd = 0, ExeFileId = 0 };
            mm.Vmas.Add(vma);
            dir.WriteMm(imagePid, mm);
            using (var w = dir.CreatePagemap(imagePid))
            {
                var buf = new byte[(int)HoleStart * 4096];
                Pattern.Fill(Base, buf);
                w.Write(Base, buf, PagemapFlags.Present | PagemapFlags.Lazy);
                buf = new byte[(int)(Pages - HoleEnd) * 4096];
                Pattern.Fill(Base + HoleEnd * 4096, buf);
                w.Write(Base + HoleEnd * 4096, buf, PagemapFlags.Present | PagemapFlags.Lazy);
                w.Complete();
            }
            var plan = LocalImages.Plan(dir, imagePid);
            Assert.Equal((long)(Pages - (HoleEnd - HoleStart)), plan.DataPages);

            string client = NativePrograms.Build("lazy_client");
            using var source = new ImagePageSource(dir);
            // the client is not really pid 4242: map whatever pid it sends onto the image's
            using var d = new RunningDaemon(source, _ => plan);
            var (exit, stdout, stderr, timedOut) = NativePrograms.Run(client, TimeSpan.FromSeconds(60), d.SocketPath, "late");
            Assert.False(timedOut, "client hung\n" + stderr + "\n" + d.LogText);
            Assert.True(exit == 0, $"client exit {exit}\n{stderr}\n{d.LogText}");
            Assert.True(d.WaitExit(TimeSpan.FromSeconds(30)), "daemon did not exit\n" + d.LogText);
            Assert.Equal(0, d.ExitCode);
        }
        finally
        {
            Directory.Delete(dirPath, true);
        }
    }
}
