using Crisp.Native;
using Xunit;

namespace Crisp.Native.Tests;

/// <summary>The lazy-pages socket's path must fit sun_path (with the daemon's temporary name) or be refused clearly.</summary>
[Trait("Category", "Unit")]
public class LazyHandOffPathTests
{
    [Fact]
    public void A_short_work_dir_gives_the_socket_in_it()
    {
        Assert.Equal("/tmp/w/lazy-pages.socket", LazyHandOff.SocketPath("/tmp/w"));
    }

    [Fact]
    public void A_work_dir_too_long_for_a_unix_socket_is_refused_naming_the_option()
    {
        string dir = "/tmp/" + new string('d', 90);
        var e = Assert.Throws<CrispException>(() => LazyHandOff.SocketPath(dir));
        Assert.Contains("--work-dir", e.Message);
        Assert.Contains(dir, e.Message);
    }

    [Fact]
    public void The_longest_accepted_path_still_fits_with_the_temporary_name()
    {
        // Grow the directory until it is refused: the last accepted one, with ".PID.tmp", fits 107 bytes.
        string last = "";
        for (int n = 1; n < 120; n++)
        {
            string dir = "/tmp/" + new string('d', n);
            try { last = LazyHandOff.SocketPath(dir); }
            catch (CrispException) { break; }
        }
        Assert.True(System.Text.Encoding.UTF8.GetByteCount(last + ".4194304.tmp") <= LazyHandOff.MaxSocketPath, last);
    }
}
