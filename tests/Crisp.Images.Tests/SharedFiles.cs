namespace Crisp.Images.Tests;

/// <summary>The repository root, and the shared files beside it (../shared from the root, wherever the clone is).</summary>
internal static class SharedFiles
{
    public static string Repo
    {
        get
        {
            var d = new DirectoryInfo(AppContext.BaseDirectory);
            while (d != null && !File.Exists(Path.Combine(d.FullName, "crisp.slnx"))) d = d.Parent;
            return d?.FullName ?? throw new InvalidOperationException("repository root (crisp.slnx) not found above " + AppContext.BaseDirectory);
        }
    }

    public static string Root => Environment.GetEnvironmentVariable("CRISP_SHARED") is { Length: > 0 } d ? d
        : Path.GetFullPath(Path.Combine(Repo, "..", "shared"));

    public static string ReferenceImages => Path.Combine(Root, "reference-images");
}
