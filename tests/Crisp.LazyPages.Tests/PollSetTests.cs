using Crisp.Native;

namespace Crisp.LazyPages.Tests;

/// <summary>The poll loop's persistent registrations, on real pipes.</summary>
[Trait("Category", "Unit")]
public sealed unsafe class PollSetTests : IDisposable
{
    private readonly List<int> _fds = new();

    private (int Read, int Write) Pipe()
    {
        int* p = stackalloc int[2];
        Errno.Check(LibC.pipe2(p, LibC.O_CLOEXEC | LibC.O_NONBLOCK), "pipe2", "test");
        _fds.Add(p[0]);
        _fds.Add(p[1]);
        return (p[0], p[1]);
    }

    private static void Poke(int fd)
    {
        byte one = 1;
        Assert.Equal(1, (int)LibC.write(fd, &one, 1));
    }

    public void Dispose()
    {
        foreach (var fd in _fds) LibC.close(fd);
    }

    /// <summary>The owners whose entries reported events in the last Wait.</summary>
    private static List<object?> Ready(PollSet set)
    {
        var ready = new List<object?>();
        for (int i = 0; i < set.Count; i++)
            if (set.Events(i) != 0) ready.Add(set.Entry(i).Owner);
        return ready;
    }

    [Fact]
    public void Registrations_stay_from_one_wait_to_the_next_and_report_only_what_is_ready()
    {
        var (r1, _) = Pipe();
        var (r2, w2) = Pipe();
        var set = new PollSet();
        object a = "a", b = "b";
        set.Add(r1, PollSlot.Uffd, a);
        set.Add(r2, PollSlot.PidFd, b);
        Assert.Equal(0, set.Wait(0));
        Poke(w2);
        Assert.Equal(1, set.Wait(1000));
        Assert.Equal(new object?[] { b }, Ready(set));
        Assert.Equal(PollSlot.PidFd, set.Entry(1).Kind);
        Assert.Equal(1, set.Wait(0)); // still readable: still reported, nothing was re-added
        Assert.Equal(2, set.Count);
    }

    [Fact]
    public void A_removed_owner_reports_nothing_at_once_and_is_squeezed_out_before_the_next_wait()
    {
        var (r1, w1) = Pipe();
        var (r2, w2) = Pipe();
        var (r3, w3) = Pipe();
        var set = new PollSet();
        object a = "a", b = "b", c = "c";
        set.Add(r1, PollSlot.Uffd, a);
        set.Add(r2, PollSlot.Uffd, b);
        set.Add(r2, PollSlot.PidFd, b); // one owner, two entries
        set.Add(r3, PollSlot.Connection, c);
        Poke(w1);
        Poke(w2);
        Poke(w3);
        Assert.Equal(4, set.Wait(1000));
        set.Remove(b); // while the results are being walked
        Assert.Equal(new object?[] { a, c }, Ready(set));
        Assert.Equal(4, set.Count);
        object d = "d";
        set.Add(r2, PollSlot.Uffd, d); // added during the walk: no events until the next wait
        Assert.Equal(new object?[] { a, c }, Ready(set));
        Assert.Equal(3, set.Wait(1000));
        Assert.Equal(3, set.Count);
        Assert.Equal(new object?[] { a, c, d }, Ready(set));
    }
}
