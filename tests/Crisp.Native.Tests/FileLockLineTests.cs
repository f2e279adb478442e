using Crisp.Native.ProcFs;
using Xunit;

namespace Crisp.Native.Tests;

[Trait("Category", "Unit")]
public class FileLockLineTests
{
    [Fact]
    public void Posix_lock_with_an_end()
    {
        var l = FileLockLine.Parse("1: POSIX  ADVISORY  WRITE 5630 fe:00:11657396 5 14");
        Assert.Equal(("POSIX", "ADVISORY", "WRITE", 5630, 11657396UL, 5L, 14L), (l.Kind, l.Mode, l.Type, l.Pid, l.Ino, l.Start, l.End));
        Assert.Equal(10, l.Length);
    }

    [Fact]
    public void Flock_to_end_of_file_has_length_zero()
    {
        var l = FileLockLine.Parse("2: FLOCK  ADVISORY  READ 77 08:01:42 0 EOF");
        Assert.Equal(("FLOCK", "READ", -1L, 0L), (l.Kind, l.Type, l.End, l.Length));
    }

    [Fact]
    public void Every_lock_line_of_an_fdinfo()
    {
        var info = FdInfo.Parse("pos:\t0\nflags:\t02100001\nmnt_id:\t26\nino:\t42\n" +
                                "lock:\t1: LEASE  ACTIVE    READ 9 fe:00:42 0 EOF\nlock:\t2: OFDLCK ADVISORY  WRITE -1 fe:00:42 0 99\n");
        var locks = FileLockLine.From(info);
        Assert.Equal(2, locks.Count);
        Assert.Equal(("LEASE", "ACTIVE"), (locks[0].Kind, locks[0].Mode));
        Assert.Equal(("OFDLCK", -1, 100L), (locks[1].Kind, locks[1].Pid, locks[1].Length));
    }

    [Fact]
    public void A_short_line_is_refused()
    {
        Assert.Throws<FormatException>(() => FileLockLine.Parse("1: POSIX ADVISORY WRITE"));
    }
}
