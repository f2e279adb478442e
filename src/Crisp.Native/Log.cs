namespace Crisp.Native;

/// <summary>
/// crisp's log, shaped like CRIU's: levels 0 (errors only) to 4 (debug), written to the
/// log file named by -o (relative to the work dir) and, for errors and warnings, to stderr.
/// Thread-safe; the command line configures it once at start.
/// </summary>
public static class Log
{
    public const int Error = 1, Warn = 2, Info = 3, Debug = 4;

    private static readonly object Gate = new();
    private static TextWriter? _file;
    private static readonly long StartTicks = Environment.TickCount64;

    /// <summary>Messages at or below this level are written to the log file. CRIU's default is 2.</summary>
    public static int Level { get; set; } = Warn;

    /// <summary>Whether errors and warnings are echoed to stderr (off in the library tests' default).</summary>
    public static bool EchoToStderr { get; set; } = true;

    public static void OpenFile(string path)
    {
        lock (Gate)
        {
            _file?.Dispose();
            var stream = new FileStream(path, FileMode.Append, FileAccess.Write, FileShare.ReadWrite);
            _file = new StreamWriter(stream) { AutoFlush = true };
        }
    }

    public static void Close()
    {
        lock (Gate) { _file?.Dispose(); _file = null; }
    }

    public static bool Enabled(int level) => level <= Level;

    public static void Write(int level, string message)
    {
        bool toFile = level <= Level && _file is not null;
        bool toErr = EchoToStderr && level <= Warn;
        if (!toFile && !toErr) return;
        string prefix = level switch { Error => "Error: ", Warn => "Warn: ", _ => "" };
        lock (Gate)
        {
            if (toFile)
                _file!.WriteLine($"({(Environment.TickCount64 - StartTicks) / 1000.0,9:F3}) {prefix}{message}");
            if (toErr)
                Console.Error.WriteLine($"crisp: {prefix}{message}");
        }
    }

    public static void E(string message) => Write(Error, message);
    public static void W(string message) => Write(Warn, message);
    public static void I(string message) => Write(Info, message);
    public static void D(string message) => Write(Debug, message);
}
