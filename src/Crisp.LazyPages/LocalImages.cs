using System.Collections.Concurrent;
using Crisp.Images;
using Crisp.Images.Pages;
using Crisp.Images.Proto;

namespace Crisp.LazyPages;

/// <summary>Lazy plans and pages read from a local images directory (mm-PID.img, pagemap-PID.img, pages-N.img).</summary>
public static class LocalImages
{
    /// <summary>
    /// The plan from an mm entry and pagemap runs: every present run inside a lazy VMA is data to
    /// deliver, whether or not it carries PE_LAZY (if restore already filled it, the copy meets
    /// EEXIST and is counted, which is harmless; leaving it out could mean zeros).
    /// Runs whose pages live in a parent image (pre-dump) come resolved by PagemapReader; an
    /// unresolved one (a plan made from raw entries) is refused.
    /// </summary>
    public static LazyPlan Plan(int pid, MmEntry mm, IEnumerable<PagemapRun> runs)
    {
        var vmas = mm.Vmas.Where(LazyVmas.IsLazy).Select(v => new LazyVma(v.Start, v.End)).ToList();
        var data = new List<PageRange>();
        foreach (var r in runs)
        {
            bool inLazy = vmas.Any(v => v.Start < r.End && r.Vaddr < v.End);
            if (!inLazy) continue;
            if ((r.Flags & PagemapFlags.Parent) != 0 && !r.IsPresent)
                throw new ImageException($"pagemap-{pid}.img", $"pages at 0x{r.Vaddr:x} are in a parent image (pre-dump); lazy-pages cannot serve them yet");
            // PE_LAZY without PE_PRESENT (a lazy dump, CRIU's too): the bytes are at the page server.
            if (r.IsPresent || r.IsLazy) data.Add(r.Range);
        }
        return new LazyPlan(pid, vmas, data);
    }

    /// <summary>Reads mm-PID.img and pagemap-PID.img from <paramref name="dir"/>.</summary>
    public static LazyPlan Plan(ImageDir dir, int pid)
    {
        var mm = dir.ReadMm(pid);
        using var pagemap = dir.OpenPagemap(pid);
        return Plan(pid, mm, pagemap.Runs);
    }
}
