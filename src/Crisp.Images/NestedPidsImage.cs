using Crisp.Images.Proto;

namespace Crisp.Images;

/// <summary>
/// crisp-nested-pids.img, crisp's own image (docs/IMAGES.md): for every task of a pid namespace
/// below the dumped root's, its pid in each of those namespaces. CRIU has no such image and
/// ignores the file; what keeps CRIU from restoring the tree flattened is the ids-PID.img of the
/// nested tasks (a pid_ns_id other than their parent's, which CRIU 4.2 refuses).
/// </summary>
public static class NestedPidsImage
{
    public const string Name = "crisp-nested-pids.img";

    public static bool Exists(ImageDir dir) => dir.Exists(Name);

    /// <summary>By root-namespace tid.</summary>
    public static Dictionary<int, NestedPid> Read(ImageDir dir)
    {
        var map = new Dictionary<int, NestedPid>();
        foreach (var e in ImageReader.ReadAll(dir.PathOf(Name), ImageMagic.CrispNestedPids, CrispNestedPidEntry.Parser))
        {
            var p = new NestedPid((int)e.Tid, e.NsTids.Select(t => (int)t).ToArray(), e.ParentForksInto);
            if (p.Tid <= 0 || p.NsTids.Length == 0 || p.NsTids.Any(t => t <= 0) || !map.TryAdd(p.Tid, p))
                throw new ImageException(dir.PathOf(Name), $"task {e.Tid}: an empty, zero or repeated entry");
        }
        return map;
    }

    public static void Write(ImageDir dir, IEnumerable<NestedPid> tasks)
    {
        using var w = new ImageWriter(dir.PathOf(Name), ImageMagic.CrispNestedPids);
        foreach (var t in tasks)
        {
            var e = new CrispNestedPidEntry { Tid = (uint)t.Tid };
            e.NsTids.AddRange(t.NsTids.Select(n => (uint)n));
            if (t.ParentForksInto) e.ParentForksInto = true;
            w.Write(e);
        }
    }
}
