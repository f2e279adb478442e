using Crisp.Native;
using Crisp.Images;

namespace Crisp.LazyPages;

public static class LazyPagesSetup
{
    /// <summary>
    /// Options for serving from a local images directory (<c>crisp lazy-pages -D DIR [-W DIR]</c>):
    /// plans from mm-PID.img + pagemap-PID.img, pages from pages-N.img. The work directory defaults
    /// to the images directory, like CRIU's. The prefetch order defaults to
    /// <see cref="WorkingSet.FileName"/> beside the images when that file exists; "" turns it off.
    /// </summary>
    public static LazyPagesOptions ForImages(string imagesDir, string? workDir = null, int statusFd = -1,
        Logger? log = null, LazyPagesPolicy? policy = null, TimeSpan? peerTimeout = null, string? prefetchOrder = null,
        string? recordOrder = null)
    {
        var dir = new ImageDir(imagesDir);
        return new LazyPagesOptions
        {
            WorkDir = workDir ?? imagesDir,
            PageSource = new ImagePageSource(dir),
            PlanFor = pid => LocalImages.Plan(dir, pid),
            StatusFd = statusFd,
            Log = log ?? Logger.Crisp,
            Policy = policy ?? new LazyPagesPolicy(),
            PeerTimeout = peerTimeout ?? TimeSpan.FromMinutes(5),
            PrefetchOrderPath = prefetchOrder ?? DefaultPrefetchOrder(imagesDir),
            RecordOrderPath = recordOrder,
        };
    }

    /// <summary>The recorded order beside the images, if there is one (read automatically).</summary>
    public static string? DefaultPrefetchOrder(string imagesDir)
    {
        string path = Path.Combine(imagesDir, WorkingSet.FileName);
        return File.Exists(path) ? path : null;
    }
}
