using Crisp.Checkpoint.Dump;
using Crisp.Images;
using Crisp.Inject;
using Crisp.Native;

namespace Crisp.Migration;

/// <summary>
/// A lazy dump's page source: pages read straight from the frozen processes with
/// process_vm_readv (no ptrace needed, any thread). Every channel is independent (the page server
/// opens one per connection). Records which lazy pages were read, so the dump knows when the
/// source is no longer needed.
///
/// The decision to resume the source and the first read are one atomic choice
/// (<see cref="TryRefuseReads"/>): once the tree is to be resumed no page leaves it, and once a
/// page has left it the tree is never resumed. Otherwise a destination still connected while
/// the source resumes could fetch a page and run beside it.
/// </summary>
public sealed class FrozenProcessPageSource : IPageSource
{
    private readonly HashSet<int> _pids;
    private readonly LazyDumpTree _tree;
    private readonly object _gate = new();
    private bool _anyRead, _refused;

    public FrozenProcessPageSource(LazyDumpTree tree)
    {
        _pids = tree.Pids.ToHashSet();
        _tree = tree;
        Delivered = new DeliveryTracker(tree);
    }

    public DeliveryTracker Delivered { get; }

    /// <summary>Fires (once) on the reading thread when the first page is about to be read.</summary>
    public event Action? FirstRead;

    /// <summary>True once a page read began: from then on the tree must never be resumed.</summary>
    public bool AnyRead { get { lock (_gate) return _anyRead; } }

    /// <summary>
    /// If no page was read yet, refuses every read from now on and returns true (the tree may be
    /// resumed); if one was, returns false (the destination may have run).
    /// </summary>
    public bool TryRefuseReads()
    {
        lock (_gate)
        {
            if (_anyRead) return false;
            _refused = true;
            return true;
        }
    }

    public IPageChannel OpenChannel() => new Channel(this);

    public void Dispose() { }

    private void BeginRead(int pid)
    {
        if (!_pids.Contains(pid))
            throw new PageSourceException($"pid {pid} is not part of this dump");
        bool first;
        lock (_gate)
        {
            if (_refused) throw new PageSourceException("the source was resumed: its pages are no longer served");
            first = !_anyRead;
            _anyRead = true;
        }
        if (first) FirstRead?.Invoke();
    }

    private sealed class Channel(FrozenProcessPageSource owner) : IPageChannel
    {
        public void Read(int pid, ulong vaddr, Span<byte> destination)
        {
            owner.BeginRead(pid);
            try
            {
                // Requests name the pid of the images; the frozen process has its own here.
                RemoteMemory.Read(owner._tree.HostPid(pid), vaddr, destination);
            }
            catch (SyscallException e)
            {
                throw new PageSourceException($"pid {pid}: pages 0x{vaddr:x}+{destination.Length} cannot be read from the frozen process: {e.Message}", e);
            }
            owner.Delivered.Mark(pid, vaddr, (ulong)destination.Length / 4096);
        }

        public void Dispose() { }
    }
}
