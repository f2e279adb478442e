using System.Runtime.InteropServices;
using Crisp.Native;

namespace Crisp.LazyPages;

/// <summary>What a poll-set entry stands for.</summary>
internal enum PollSlot { Listener, Connection, Wake, Uffd, PidFd }

/// <summary>
/// The poll loop's descriptors, kept registered from one turn to the next: entries are added when a
/// descriptor appears and removed when it goes, never rebuilt. Removal only disables an entry
/// (poll ignores a negative fd), so handlers may add and remove while a turn's results are being
/// walked; disabled entries are squeezed out before the next poll. Used by the poll thread only.
/// </summary>
internal sealed unsafe class PollSet
{
    private readonly List<LibC.PollFd> _fds = new();
    private readonly List<(PollSlot Kind, object? Owner)> _owners = new();
    private int _disabled;

    public int Count => _fds.Count;

    public void Add(int fd, PollSlot kind, object? owner)
    {
        _fds.Add(new LibC.PollFd { fd = fd, events = LibC.POLLIN });
        _owners.Add((kind, owner));
    }

    /// <summary>Disables every entry of <paramref name="owner"/> (before its descriptors are closed).</summary>
    public void Remove(object owner)
    {
        for (int i = 0; i < _fds.Count; i++)
            if (ReferenceEquals(_owners[i].Owner, owner) && _fds[i].fd >= 0)
            {
                _fds[i] = new LibC.PollFd { fd = -1 };
                _disabled++;
            }
    }

    /// <summary>poll(2) over the set; EINTR counts as nothing ready. Returns how many entries have events.</summary>
    public int Wait(int timeoutMillis)
    {
        if (_disabled > 0) Compact();
        var span = CollectionsMarshal.AsSpan(_fds);
        int n;
        fixed (LibC.PollFd* p = span) n = LibC.poll(p, (nuint)span.Length, timeoutMillis);
        if (n < 0)
        {
            if (Errno.Last == Errno.EINTR) return 0;
            Errno.Check(n, "poll", "lazy-pages fds");
        }
        return n;
    }

    /// <summary>The events of entry <paramref name="i"/> from the last <see cref="Wait"/> (0 if it was removed since).</summary>
    public short Events(int i) => _fds[i].fd < 0 ? (short)0 : _fds[i].revents;

    public (PollSlot Kind, object? Owner) Entry(int i) => _owners[i];

    private void Compact()
    {
        int w = 0;
        for (int r = 0; r < _fds.Count; r++)
        {
            if (_fds[r].fd < 0) continue;
            _fds[w] = _fds[r];
            _owners[w] = _owners[r];
            w++;
        }
        _fds.RemoveRange(w, _fds.Count - w);
        _owners.RemoveRange(w, _owners.Count - w);
        _disabled = 0;
    }
}
