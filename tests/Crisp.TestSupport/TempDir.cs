namespace Crisp.TestSupport;

/// <summary>A temp directory removed on Dispose.</summary>
public sealed class TempDir : IDisposable
{
    public TempDir(string prefix = "crisp-test-") => Path = Directory.CreateTempSubdirectory(prefix).FullName;

    public string Path { get; }
    public string this[string name] => System.IO.Path.Combine(Path, name);
    public string File(string name) => this[name];

    public void Dispose()
    {
        try { Directory.Delete(Path, true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}
