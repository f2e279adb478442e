using Crisp.Checkpoint.Check;
using Crisp.Native;
using Xunit;

namespace Crisp.Integration.Tests;

public class CheckTests
{
    private static readonly KernelCheck.Answers Healthy = new()
    {
        IsRoot = true,
        CapEff = (1UL << KernelCheck.CAP_SYS_PTRACE) | (1UL << KernelCheck.CAP_SYS_ADMIN) | (1UL << KernelCheck.CAP_CHECKPOINT_RESTORE),
        PtraceScope = 0,
        DevUserfaultfdExists = true,
        UffdFeatures = 0x1FFFF,
        KernelRelease = "6.18.0",
    };

    [Fact]
    public void All_answers_good_means_nothing_required_is_missing()
    {
        var features = KernelCheck.Evaluate(Healthy);
        Assert.DoesNotContain(features, f => f.Required && !f.Present);
        // CAP_SYS_RESOURCE is absent in these answers, but only optional.
        Assert.Contains(features, f => f.Name == "CAP_SYS_RESOURCE" && !f.Present && !f.Required);
    }

    [Fact]
    public void Userfaultfd_refused_everywhere_is_reported_against_lazy_commands()
    {
        var a = Healthy with { UserfaultfdSyscallErrno = Errno.EPERM, DevUserfaultfdExists = false, UffdFeatures = 0 };
        var features = KernelCheck.Evaluate(a);
        var uffd = Assert.Single(features, f => f.Name == "userfaultfd");
        Assert.False(uffd.Present);
        Assert.Contains("lazy-pages", uffd.NeededBy);
        Assert.Contains("EPERM", uffd.Detail);
        Assert.False(Assert.Single(features, f => f.Name == "uffd non-cooperative events").Present);
    }

    [Fact]
    public void Dev_userfaultfd_alone_is_enough_when_the_syscall_is_refused()
    {
        var a = Healthy with { UserfaultfdSyscallErrno = Errno.EPERM };
        Assert.True(Assert.Single(KernelCheck.Evaluate(a), f => f.Name == "userfaultfd").Present);
    }

    [Fact]
    public void Missing_event_bits_are_named()
    {
        var a = Healthy with { UffdFeatures = LibC.UFFD_FEATURE_EVENT_FORK };
        var ev = Assert.Single(KernelCheck.Evaluate(a), f => f.Name == "uffd non-cooperative events");
        Assert.False(ev.Present);
        Assert.Contains("0x2", ev.Detail);
    }

    [Fact]
    public void Strict_yama_scope_without_ptrace_capability_blocks_dump()
    {
        var a = Healthy with { PtraceScope = 3, CapEff = 1UL << KernelCheck.CAP_SYS_ADMIN };
        var p = Assert.Single(KernelCheck.Evaluate(a), f => f.Name == "ptrace");
        Assert.False(p.Present);
        Assert.Contains("dump", p.NeededBy);
    }

    [Fact]
    public void This_machine_offers_everything_crisp_requires()
    {
        // The real probes against the running kernel (the tests run as root on Linux >= 6.7).
        var answers = KernelCheck.Probe();
        Assert.Equal(0, answers.PidfdGetfdErrno);
        Assert.Equal(KernelCheck.LazyFeatures, answers.UffdFeatures & KernelCheck.LazyFeatures);
        Assert.Equal(0, answers.PagemapScanErrno);
        Assert.DoesNotContain(KernelCheck.Evaluate(answers), f => f.Required && !f.Present);
    }
}
