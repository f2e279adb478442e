using Crisp.Checkpoint.Restore;
using Crisp.Native;
using Xunit;
using static Crisp.Integration.Tests.Restore.RestoreTestUtil;

namespace Crisp.Integration.Tests.Restore;

/// <summary>Restores the CRIU 4.2 reference image of memtouch (a dump crisp did not write).</summary>
public class ReferenceImageRestoreTests
{
    private const string Ref = "/work/shared/reference-images/memtouch-1mib";
    private const int RefPid = 17930;

    [Fact]
    public void Criu_memtouch_image_restores_and_its_memory_checks_ok()
    {
        if (!Directory.Exists(Ref)) throw new InvalidOperationException("reference images missing");
        Assert.False(Directory.Exists($"/proc/{RefPid}"), $"pid {RefPid} is taken on this machine; this test needs it free");
        // The paths the dumped process used: its binary and its log.
        Gcc("/work/shared/reference-images/memtouch.c", "/tmp/refimg-memtouch");
        Assert.Equal(16808, new FileInfo("/tmp/refimg-memtouch").Length);
        Directory.CreateDirectory("/tmp/refimg/memtouch-1mib");
        string log = "/tmp/refimg/memtouch-1mib/log";
        File.WriteAllText(log, "");

        var r = Restorer.Restore(new RestoreOptions { ImagesDir = Ref + "/img" });
        try
        {
            Assert.Equal(RefPid, r.Pid);
            WaitForLine(log, l => l.StartsWith("hb "));
            LibC.kill(r.Pid, LibC.SIGUSR1);
            var sweep = WaitForLine(log, l => l.StartsWith("sweep "));
            Assert.Contains(" ok ", sweep);
            // The heartbeat counter continues from the dumped one (the image was taken after ~80 beats).
            var hb = Lines(log).First(l => l.StartsWith("hb "));
            Assert.True(long.Parse(hb.Split(' ')[1]) > 10, hb);
        }
        finally
        {
            KillAndReap(r.Pid);
        }
    }
}
