using System.Globalization;
using System.Text;

namespace Crisp.LazyPages;

/*
 * Working-set prefetch (what REAP calls record-and-prefetch): a lazy restore records, per
 * process, the order in which its pages were first asked for; a later lazy restore of the same
 * images pushes those pages first, right when the process is handed over (before it resumes,
 * before restore-finished releases the ordinary prefetch), in that order. The process then finds
 * its working set in place instead of faulting on it page by page.
 *
 * What is recorded: the window every fault brought in with data (fault-around or sequential
 * window) and, for a fault on a page the background prefetch had claimed but not yet copied, the
 * fault-around block around it (the page was touched: it belongs to the set even though the
 * prefetch delivered it). Pages the prefetch delivered before anyone touched them are invisible
 * to the daemon and are not recorded. Zero-filled faults carry no data and are not recorded.
 * Addresses are the image's (where the pages were at dump time): a later restore maps them at the
 * same place.
 *
 * The file (text, one line each, hex addresses, consecutive windows merged):
 *   crisp-prefetch-order 1
 *   pid <image pid>
 *   <image start> <pages>
 *   ...
 * It is an ordering hint only: a range no longer in the plan (other images, a stale file) is
 * skipped, and what it names is delivered from the plan's own source, so a wrong file can cost
 * time, never data.
 */

/// <summary>Reading and writing the recorded fault order (format above).</summary>
public static class WorkingSet
{
    /// <summary>The file's name beside the images (the default place; crisp's own, CRIU ignores it).</summary>
    public const string FileName = "crisp-prefetch-order";
    private const string Magic = "crisp-prefetch-order 1";
    private const int PageSize = 4096;

    /// <summary>Per image pid, the recorded ranges (image start, end) in first-fault order.</summary>
    public static Dictionary<int, List<(ulong Start, ulong End)>> Read(string path)
    {
        var result = new Dictionary<int, List<(ulong, ulong)>>();
        List<(ulong, ulong)>? current = null;
        int n = 0;
        foreach (var raw in File.ReadLines(path))
        {
            n++;
            var line = raw.Trim();
            if (n == 1)
            {
                if (line != Magic) throw new FormatException($"{path}: not a crisp prefetch order (first line '{line}')");
                continue;
            }
            if (line.Length == 0 || line[0] == '#') continue;
            var f = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (f.Length == 2 && f[0] == "pid" && int.TryParse(f[1], NumberStyles.None, CultureInfo.InvariantCulture, out int pid))
            {
                if (!result.TryGetValue(pid, out current)) result[pid] = current = new List<(ulong, ulong)>();
                continue;
            }
            if (current == null || f.Length != 2
                || !ulong.TryParse(f[0], NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out ulong start)
                || !ulong.TryParse(f[1], NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out ulong pages)
                || start % PageSize != 0 || pages == 0 || pages > (ulong.MaxValue - start) / PageSize)
                throw new FormatException($"{path}:{n}: bad line '{line}'");
            current.Add((start, start + pages * PageSize));
        }
        if (n == 0) throw new FormatException($"{path}: empty");
        return result;
    }

    /// <summary>Writes the order (per image pid, ranges in order); consecutive adjacent ranges are merged. Atomic (rename).</summary>
    public static void Write(string path, IEnumerable<(int Pid, IReadOnlyList<(ulong Start, ulong End)> Order)> processes)
    {
        var sb = new StringBuilder();
        sb.Append(Magic).Append('\n');
        foreach (var (pid, order) in processes)
        {
            if (order.Count == 0) continue;
            sb.Append("pid ").Append(pid.ToString(CultureInfo.InvariantCulture)).Append('\n');
            foreach (var (s, e) in Merge(order))
                sb.Append(s.ToString("x", CultureInfo.InvariantCulture)).Append(' ')
                  .Append(((e - s) / PageSize).ToString("x", CultureInfo.InvariantCulture)).Append('\n');
        }
        string tmp = path + ".tmp";
        File.WriteAllText(tmp, sb.ToString());
        File.Move(tmp, path, overwrite: true);
    }

    /// <summary>Consecutive entries where one starts where the last ended become one; order otherwise kept.</summary>
    public static List<(ulong Start, ulong End)> Merge(IEnumerable<(ulong Start, ulong End)> order)
    {
        var merged = new List<(ulong Start, ulong End)>();
        foreach (var (s, e) in order)
        {
            if (s >= e) continue;
            if (merged.Count > 0 && merged[^1].End == s) merged[^1] = (merged[^1].Start, e);
            else merged.Add((s, e));
        }
        return merged;
    }
}
