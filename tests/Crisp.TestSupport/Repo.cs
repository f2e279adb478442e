namespace Crisp.TestSupport;

/// <summary>
/// The repository root (the directory holding crisp.slnx above the test binaries) and the shared
/// files beside it: ../shared from the root wherever the clone is, or CRISP_SHARED when set.
/// </summary>
public static class Repo
{
    public static string Root { get; } = FindRoot();

    public static string Shared => Environment.GetEnvironmentVariable("CRISP_SHARED") is { Length: > 0 } d ? d
        : System.IO.Path.GetFullPath(System.IO.Path.Combine(Root, "..", "shared"));

    public static string ReferenceImages => System.IO.Path.Combine(Shared, "reference-images");

    /// <summary>tests/workloads: the C programs the live tests run.</summary>
    public static string Workloads => System.IO.Path.Combine(Root, "tests", "workloads");

    private static string FindRoot()
    {
        var d = new DirectoryInfo(AppContext.BaseDirectory);
        while (d != null && !System.IO.File.Exists(System.IO.Path.Combine(d.FullName, "crisp.slnx"))) d = d.Parent;
        return d?.FullName ?? throw new InvalidOperationException("repository root (crisp.slnx) not found above " + AppContext.BaseDirectory);
    }
}
