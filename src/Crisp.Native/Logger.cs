namespace Crisp.Native;

/// <summary>
/// Where one component's log lines go, at <see cref="Log"/>'s levels. The libraries that may run
/// more than once in a process (the lazy-pages daemon, the page server and its client) take a
/// Logger; by default it is crisp's log itself (<see cref="Crisp"/>), and a test that runs one
/// in-process gives it a sink of its own to read the lines back (<see cref="Lines"/>).
/// </summary>
public sealed class Logger(Action<int, string> write)
{
    /// <summary>crisp's log: the -o file at its -v level, errors and warnings on stderr.</summary>
    public static Logger Crisp { get; } = new(Log.Write);

    public static Logger Silent { get; } = new((_, _) => { });

    /// <summary>Every line, whatever its level, to <paramref name="line"/>, which may be called from several threads at once.</summary>
    public static Logger Lines(Action<string> line) => new((_, m) => line(m));

    /// <summary>The same sink, each line starting with <paramref name="prefix"/>.</summary>
    public Logger Prefixed(string prefix) => new((level, m) => write(level, prefix + m));

    public void E(string message) => write(Log.Error, message);
    public void W(string message) => write(Log.Warn, message);
    public void I(string message) => write(Log.Info, message);
    public void D(string message) => write(Log.Debug, message);
}
