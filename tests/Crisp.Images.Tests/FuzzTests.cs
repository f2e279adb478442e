using Crisp.Images.Pages;
using Xunit;
using Xunit.Abstractions;

namespace Crisp.Images.Tests;

/// <summary>
/// Untrusted images stay harmless: every image kind crisp reads, mutated (bits flipped, bytes
/// overwritten with lengths and extremes, cut short, grown), either reads or fails with an
/// <see cref="ImageException"/>, quickly and without a huge allocation. Seeds are CRIU's
/// reference images; inputs that ever broke the reader are kept in fuzz-corpus/ and replayed.
///
/// In the suite each image gets a few seconds with a fixed seed (the same inputs every run).
/// Longer, with a new seed, and saving what breaks into the corpus:
///   CRISP_FUZZ_SECONDS=600 CRISP_FUZZ_SEED=$RANDOM dotnet test tests/Crisp.Images.Tests --filter FullyQualifiedName~FuzzTests
/// </summary>
[Trait("Category", "Unit")]
public sealed class FuzzTests(ITestOutputHelper output)
{
    private static readonly string Corpus = Path.Combine(Repo.Root, "tests", "Crisp.Images.Tests", "fuzz-corpus");

    /// <summary>Reads an image the way restore does, by its file name; pagemaps with their pages.</summary>
    private static void ReadAsRestoreDoes(ImageDir dir, string name)
    {
        string stem = Path.GetFileNameWithoutExtension(name);
        int Id() => int.Parse(stem[(stem.LastIndexOf('-') + 1)..]);
        switch (stem.Split('-')[0])
        {
            case "inventory": dir.ReadInventory(); break;
            case "pstree": dir.ReadPstree(); break;
            case "core": dir.ReadCore(Id()); break;
            case "ids": dir.ReadIds(Id()); break;
            case "mm": dir.ReadMm(Id()); break;
            case "fs": dir.ReadFs(Id()); break;
            case "files": dir.ReadFiles(); break;
            case "fdinfo": dir.ReadFdinfo((uint)Id()); break;
            case "pipes" when stem == "pipes-data": dir.ReadPipesData(); break;
            case "seccomp": dir.ReadSeccomp(); break;
            case "timens": dir.ReadTimens((uint)Id()); break;
            case "cpuinfo": dir.ReadCpuinfo(); break;
            case "pagemap":
                using (var pm = dir.OpenPagemap(Id()))
                {
                    var page = new byte[PagemapRun.PageSize];
                    foreach (var r in pm.Runs.Where(r => r.IsPresent).Take(64)) pm.Read(r.Vaddr, page);
                }
                break;
            default: ImageReader.Open(dir.PathOf(name)).ReadAll(Crisp.Images.Proto.InventoryEntry.Parser); break;
        }
    }

    /// <summary>One seed per image kind (the largest of the reference dumps' files of that kind).</summary>
    public static TheoryData<string> Seeds()
    {
        var data = new TheoryData<string>();
        var files = Directory.GetDirectories(Repo.ReferenceImages)
            .Where(d => Directory.Exists(Path.Combine(d, "img")))
            .SelectMany(d => Directory.GetFiles(Path.Combine(d, "img"), "*.img"))
            .Where(f => !Path.GetFileName(f).StartsWith("pages-", StringComparison.Ordinal));
        foreach (var kind in files.GroupBy(f => Path.GetFileNameWithoutExtension(f).Split('-')[0]).OrderBy(g => g.Key))
        {
            var f = kind.OrderByDescending(x => new FileInfo(x).Length).ThenBy(x => x, StringComparer.Ordinal).First();
            data.Add(Path.Combine(Path.GetFileName(Path.GetDirectoryName(Path.GetDirectoryName(f)))!, Path.GetFileName(f)));
        }
        return data;
    }

    [Theory]
    [MemberData(nameof(Seeds))]
    public void A_mutated_image_reads_or_fails_with_an_ImageException(string seed)
    {
        string source = Path.Combine(Repo.ReferenceImages, Path.GetDirectoryName(seed)!, "img");
        string name = Path.GetFileName(seed);
        byte[] original = File.ReadAllBytes(Path.Combine(source, name));
        double seconds = double.TryParse(Environment.GetEnvironmentVariable("CRISP_FUZZ_SECONDS"), out var s) ? s : 0.5;
        int baseSeed = int.TryParse(Environment.GetEnvironmentVariable("CRISP_FUZZ_SEED"), out var e) ? e : 1;
        var rng = new Random(baseSeed ^ StringComparer.Ordinal.GetHashCode(seed) & 0x7fffffff);

        string work = Directory.CreateTempSubdirectory("crisp-fuzz-").FullName;
        try
        {
            // The pages files stay as CRIU wrote them: a pagemap is mutated against real pages.
            foreach (var pages in Directory.GetFiles(source, "pages-*.img"))
                File.Copy(pages, Path.Combine(work, Path.GetFileName(pages)));
            var dir = new ImageDir(work);
            ReadAsRestoreDoes(Write(dir, name, original), name); // the seed itself reads

            var corpusInputs = Directory.Exists(Corpus)
                ? Directory.GetFiles(Corpus, name.Split('-')[0].Replace(".img", "") + "*").Select(File.ReadAllBytes).ToList()
                : [];
            int runs = 0, refused = 0;
            var clock = System.Diagnostics.Stopwatch.StartNew();
            foreach (var input in corpusInputs.Concat(Mutations(original, rng)))
            {
                // At least MinMutations every run (the same ones: the seed is fixed), more while time is left.
                if (runs >= corpusInputs.Count + MinMutations && clock.Elapsed.TotalSeconds > seconds) break;
                runs++;
                var one = System.Diagnostics.Stopwatch.StartNew();
                try { ReadAsRestoreDoes(Write(dir, name, input), name); }
                catch (ImageException) { refused++; }
                catch (Exception x)
                {
                    string kept = Keep(name, input);
                    Assert.Fail($"{seed}: a mutated image threw {x.GetType().Name}, not ImageException: {x.Message} (input kept as {kept})");
                }
                if (one.ElapsedMilliseconds >= 2000)
                    Assert.Fail($"{seed}: one read took {one.ElapsedMilliseconds} ms (input kept as {Keep(name, input)})");
            }
            output.WriteLine($"{seed}: {runs} inputs ({corpusInputs.Count} from the corpus), {refused} refused as corrupt, {runs - refused} read");
            Assert.True(runs > corpusInputs.Count, "no mutation ran");
        }
        finally { Directory.Delete(work, true); }
    }

    private const int MinMutations = 200;

    private static ImageDir Write(ImageDir dir, string name, byte[] bytes)
    {
        File.WriteAllBytes(dir.PathOf(name), bytes);
        return dir;
    }

    /// <summary>Saves an input that broke the reader into the corpus (a fuzzing run's finding to commit) and names it.</summary>
    private static string Keep(string name, byte[] input)
    {
        Directory.CreateDirectory(Corpus);
        string path = Path.Combine(Corpus, $"{Path.GetFileNameWithoutExtension(name).Split('-')[0]}-{Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(input))[..16]}.bin");
        File.WriteAllBytes(path, input);
        return path;
    }

    private static readonly uint[] Interesting = [0, 1, 0x7f, 0x80, 0xff, 0x7fff, 0xffff, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff];

    /// <summary>An endless stream of mutants of <paramref name="seed"/>: one to four edits each.</summary>
    private static IEnumerable<byte[]> Mutations(byte[] seed, Random rng)
    {
        while (true)
        {
            var b = (byte[])seed.Clone();
            int edits = 1 + rng.Next(4);
            for (int i = 0; i < edits && b.Length > 0; i++)
            {
                int at = rng.Next(b.Length);
                switch (rng.Next(6))
                {
                    case 0: b[at] ^= (byte)(1 << rng.Next(8)); break;
                    case 1: b[at] = (byte)rng.Next(256); break;
                    case 2:
                        if (at + 4 <= b.Length) BitConverter.TryWriteBytes(b.AsSpan(at, 4), Interesting[rng.Next(Interesting.Length)]);
                        break;
                    case 3: b = b[..at]; break;                                  // cut short
                    case 4: b = [.. b[..at], .. new byte[1 + rng.Next(64)], .. b[at..]]; break; // grown
                    default:                                                     // a record length replaced (magic and first lengths sit at 8..)
                        if (b.Length >= 12) BitConverter.TryWriteBytes(b.AsSpan(8, 4), Interesting[rng.Next(Interesting.Length)]);
                        break;
                }
            }
            yield return b;
        }
    }
}
