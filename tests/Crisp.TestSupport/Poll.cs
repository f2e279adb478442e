namespace Crisp.TestSupport;

public static class Poll
{
    /// <summary>Polls <paramref name="cond"/> every 5 ms until true or the timeout; returns the last result.</summary>
    public static bool Until(Func<bool> cond, int timeoutMs = 5000)
    {
        var sw = System.Diagnostics.Stopwatch.StartNew();
        while (sw.ElapsedMilliseconds < timeoutMs)
        {
            try { if (cond()) return true; } catch (Exception e) when (e is IOException or FormatException or IndexOutOfRangeException or ArgumentException) { }
            Thread.Sleep(5);
        }
        return cond();
    }

    public static string ReadFile(string path)
    {
        try { return File.ReadAllText(path); } catch (FileNotFoundException) { return ""; }
    }
}
