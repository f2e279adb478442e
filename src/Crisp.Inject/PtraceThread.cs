using System.Collections.Concurrent;
using System.Runtime.ExceptionServices;

namespace Crisp.Inject;

/// <summary>
/// The one OS thread that talks ptrace. The kernel ties a tracee to the thread that
/// attached it: ptrace requests from any other thread fail with ESRCH, and waitpid
/// for a tracee only works from the tracer's thread group (but stops are reported
/// to the attaching thread first). So every seize, register access, injected syscall
/// and detach runs here, queued through <see cref="Invoke{T}(Func{T})"/>.
/// Calls made on this thread itself run inline, so ptrace code may nest freely.
/// </summary>
public sealed class PtraceThread : IDisposable
{
    private readonly BlockingCollection<WorkItem> _queue = new();
    private readonly Thread _thread;
    private volatile bool _disposed;
    private readonly ManualResetEventSlim _started = new();

    private sealed class WorkItem(Action run)
    {
        public readonly Action Run = run;
        public readonly ManualResetEventSlim Done = new();
        public ExceptionDispatchInfo? Error;
    }

    public PtraceThread(string name = "crisp-ptrace")
    {
        _thread = new Thread(Loop) { IsBackground = true, Name = name };
        _thread.Start();
        _started.Wait();
    }

    /// <summary>The OS thread id of the tracer (what /proc/PID/status shows as TracerPid).</summary>
    public int Tid { get; private set; }

    /// <summary>True when the calling thread is this ptrace thread.</summary>
    public bool IsCurrent => Thread.CurrentThread == _thread;

    /// <summary>Throws unless called on this ptrace thread (guards internal ptrace code).</summary>
    public void VerifyAccess()
    {
        if (!IsCurrent) throw new InvalidOperationException("ptrace work must run on the PtraceThread (use Invoke)");
    }

    /// <summary>Runs <paramref name="f"/> on the ptrace thread and blocks until it is done; exceptions propagate.</summary>
    public T Invoke<T>(Func<T> f)
    {
        if (IsCurrent) return f();
        T result = default!;
        Invoke(() => { result = f(); });
        return result;
    }

    public void Invoke(Action a)
    {
        if (IsCurrent) { a(); return; }
        ObjectDisposedException.ThrowIf(_disposed, this);
        var item = new WorkItem(a);
        _queue.Add(item);
        item.Done.Wait();
        item.Done.Dispose();
        item.Error?.Throw();
    }

    private void Loop()
    {
        Tid = (int)Crisp.Native.LibC.Syscall(Crisp.Native.LibC.SYS_gettid);
        _started.Set();
        foreach (var item in _queue.GetConsumingEnumerable())
        {
            try { item.Run(); }
            catch (Exception e) { item.Error = ExceptionDispatchInfo.Capture(e); }
            item.Done.Set();
        }
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _queue.CompleteAdding();
        if (!IsCurrent) _thread.Join();
    }
}
