using Crisp.TestSupport;

namespace Crisp.Native.Tests;

/// <summary>The test programs, compiled once per test class into a temp dir.</summary>
public sealed class CompiledPrograms : IDisposable
{
    private readonly TempDir _dir = new();
    private readonly Dictionary<string, string> _exe = new();

    public string Get(string name)
    {
        lock (_exe)
        {
            if (_exe.TryGetValue(name, out var e)) return e;
            var src = name switch
            {
                "counter" => TestPrograms.Counter,
                "threads" => TestPrograms.Threads,
                "pipe" => TestPrograms.PipeReader,
                "sleeper" => TestPrograms.Sleeper,
                "forker" => TestPrograms.Forker,
                "zombie-leader" => TestPrograms.ZombieLeader,
                _ => throw new ArgumentException(name),
            };
            return _exe[name] = Gcc.Compile(_dir, name, src, name is "threads" or "zombie-leader" ? "-pthread" : "-O1");
        }
    }

    public void Dispose() => _dir.Dispose();
}
