using Crisp.Checkpoint.Restore;
using Crisp.Integration.Tests.Lazy;
using Crisp.Native;
using Xunit;
using static Crisp.TestSupport.TestProcesses;

namespace Crisp.Integration.Tests.Restore;

/// <summary>
/// Restores the CRIU 4.2 reference image of memtouch: a dump crisp did not write, made on
/// another kernel build (its vDSO differs from this kernel's, so the restore keeps it as a proxy).
/// </summary>
public class ReferenceImageRestoreTests
{
    private static string Ref => Path.Combine(Repo.ReferenceImages, "memtouch-1mib");
    private const int RefPid = 17930;

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Criu_memtouch_image_restores_and_its_memory_checks_ok(bool lazy)
    {
        if (!Directory.Exists(Ref)) throw new InvalidOperationException($"reference images missing at {Ref}");
        Assert.False(Directory.Exists($"/proc/{RefPid}"), $"pid {RefPid} is taken on this machine; this test needs it free");
        // The paths the dumped process used: its binary and its log.
        Gcc.CompileFile(Path.Combine(Repo.ReferenceImages, "memtouch.c"), "/tmp/refimg-memtouch", "-O2", "-pthread");
        Assert.Equal(16808, new FileInfo("/tmp/refimg-memtouch").Length);
        Directory.CreateDirectory("/tmp/refimg/memtouch-1mib");
        string log = "/tmp/refimg/memtouch-1mib/log";
        File.WriteAllText(log, "");

        string work = TempDir("refimg");
        LazyDaemon? daemon = lazy ? new LazyDaemon(Ref + "/img", work, work) : null;
        RestoredProcess? r = null;
        try
        {
            r = Restorer.Restore(new RestoreOptions { ImagesDir = Ref + "/img", WorkDir = lazy ? work : null, Lazy = lazy });
            Assert.Equal(RefPid, r.Pid);
            WaitForLine(log, l => l.StartsWith("hb "));
            LibC.kill(r.Pid, LibC.SIGUSR1);
            var sweep = WaitForLine(log, l => l.StartsWith("sweep "));
            Assert.Contains(" ok ", sweep);
            // The heartbeat counter continues from the dumped one (the image was taken after ~80 beats).
            var hb = Lines(log).First(l => l.StartsWith("hb "));
            Assert.True(long.Parse(hb.Split(' ')[1]) > 10, hb);
            if (daemon != null) Assert.Equal(0, daemon.WaitExit());
        }
        finally
        {
            if (r != null) KillAndReap(r.Pid);
            daemon?.Dispose();
            Directory.Delete(work, true);
        }
    }
}
