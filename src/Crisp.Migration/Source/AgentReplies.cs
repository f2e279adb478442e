using System.Diagnostics;
using Crisp.Native;

namespace Crisp.Migration;

/// <summary>
/// The agent's side of the control connection as the source reads it, on its own thread:
/// "running" (pid, restore time), "error" (which aborts the transfer if nothing moved yet),
/// "complete" (the destination daemon's rc and statistics).
/// </summary>
internal sealed class AgentReplies(MigrationWire wire)
{
    public TaskCompletionSource<(int Pid, TimeSpan Restore, long AtTicks)> Running { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    public TaskCompletionSource<(int Rc, string Stats)> Complete { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    public LazyDumpServer? Server { get; set; }

    public void Start() => new Thread(Read) { IsBackground = true, Name = "migrate control" }.Start();

    private void Read()
    {
        try
        {
            while (true)
            {
                int type = wire.ReadType();
                switch (type)
                {
                    case MigrationWire.Running:
                        int p = wire.ReadI32();
                        long us = wire.ReadI64();
                        Running.TrySetResult((p, TimeSpan.FromMicroseconds(us), Stopwatch.GetTimestamp()));
                        break;
                    case MigrationWire.Error:
                        string msg = wire.ReadString();
                        Running.TrySetException(new CrispException($"the agent failed: {msg}"));
                        Server?.Abort($"the agent failed: {msg}");
                        break;
                    case MigrationWire.Complete:
                        int rc = wire.ReadI32();
                        Complete.TrySetResult((rc, wire.ReadString()));
                        break;
                    default:
                        throw new IOException(type < 0 ? "the agent closed the connection" : $"unexpected message {type}");
                }
            }
        }
        catch (Exception e)
        {
            Running.TrySetException(new CrispException($"agent connection: {e.Message}"));
            Complete.TrySetException(e);
            Server?.Abort($"lost the agent: {e.Message}");
        }
    }
}
