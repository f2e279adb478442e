using Crisp.Inject;
using Crisp.Native.ProcFs;
using Crisp.TestSupport;
using Xunit;

namespace Crisp.Native.Tests;

public class StubElfTests
{
    [Fact]
    public void Image_is_a_tiny_static_elf_with_one_load_segment()
    {
        var elf = StubElf.Build();
        Assert.Equal(129, elf.Length);
        Assert.Equal(new byte[] { 0x7f, (byte)'E', (byte)'L', (byte)'F', 2, 1, 1 }, elf[..7]);
        Assert.Equal(StubElf.DefaultLoadAddress + StubElf.EntryOffset, BitConverter.ToUInt64(elf, 24));
        Assert.Equal(1, BitConverter.ToUInt16(elf, 56)); // one program header
        Assert.Equal(new byte[] { 0x0f, 0x05 }, elf[StubElf.SyscallOffset..(StubElf.SyscallOffset + 2)]);
        Assert.Throws<ArgumentException>(() => StubElf.Build(0x1234));
    }

    [Fact]
    public void Stub_starts_pauses_and_can_be_seized_and_injected()
    {
        int pid = StubElf.Start();
        using var child = ChildProcess.Adopt(pid);
        Assert.True(Poll.Until(() => Proc.Stat(pid).State == 'S' && Proc.Maps(pid).Any(v => v.Start == StubElf.DefaultLoadAddress)),
            "stub did not start");

        var maps = Proc.Maps(pid);
        var text = maps.Single(v => v.Start == StubElf.DefaultLoadAddress);
        Assert.Equal(StubElf.DefaultLoadAddress + LibC.PageSize, text.End);
        Assert.Equal(LibC.PROT_READ | LibC.PROT_EXEC, text.Prot);
        Assert.StartsWith("/memfd:crisp-stub", text.Path);
        var names = maps.Select(v => v.Path).Where(n => n.StartsWith('[')).ToHashSet();
        Assert.Contains("[vdso]", names);
        Assert.Contains("[vvar]", names);
        Assert.Contains("[stack]", names);
        // Nothing else: text, vvar(s), vdso, stack, vsyscall.
        Assert.All(maps, v => Assert.True(v == text || v.IsSpecial, $"unexpected mapping {v}"));
        Assert.Equal([0, 1, 2], Proc.Fds(pid));

        using var pt = new PtraceThread();
        var p = SeizedProcess.Seize(pt, pid);
        var t = p.Leader;
        Assert.Equal(LibC.SYS_pause, t.InterruptedSyscall);
        Assert.Equal(-Errno.ERESTARTNOHAND, t.InterruptedResult);
        Assert.Equal(StubElf.DefaultLoadAddress + StubElf.SyscallOffset + 2, t.SeizeRegs.rip);

        using (var sys = p.Inject())
        {
            Assert.Equal(StubElf.DefaultLoadAddress, sys.CodeAddress);
            Assert.Equal(pid, sys.Call(LibC.SYS_getpid));
            ulong a = sys.Mmap(0x2000_0000_0000, LibC.PageSize, LibC.PROT_READ | LibC.PROT_WRITE,
                LibC.MAP_PRIVATE | LibC.MAP_ANONYMOUS | LibC.MAP_FIXED_NOREPLACE);
            Assert.Equal(0x2000_0000_0000UL, a);
            Assert.Contains(Proc.Maps(pid), v => v.Start == a);
            sys.Munmap(a, LibC.PageSize);
        }
        // The stub's text is unchanged after the injector put its bytes back.
        var textNow = new byte[129];
        RemoteMemory.Read(pid, StubElf.DefaultLoadAddress, textNow);
        Assert.Equal(StubElf.Build(), textNow);

        p.Resume();
        Assert.True(Poll.Until(() => Proc.Stat(pid).State == 'S'));
        Assert.Equal(0, Proc.Status(pid).TracerPid);
    }

    [Fact]
    public void Stub_gets_only_the_fds_it_is_given()
    {
        var fds = new int[2];
        unsafe { fixed (int* f = fds) Errno.Check(LibC.pipe2(f, 0), "pipe2", "test"); } // not CLOEXEC on purpose
        try
        {
            int pid = StubElf.Start(extraFds: [(fds[1], 5)], newSession: true);
            using var child = ChildProcess.Adopt(pid);
            Assert.True(Poll.Until(() => Proc.Stat(pid).State == 'S'));
            Assert.Equal([0, 1, 2, 5], Proc.Fds(pid));
            Assert.StartsWith("pipe:", Proc.FdTarget(pid, 5));
            Assert.Equal(pid, Proc.Stat(pid).Session);
            Assert.Equal(LibC.O_WRONLY, Proc.FdInfo(pid, 5).Flags & LibC.O_ACCMODE);
        }
        finally
        {
            LibC.close(fds[0]);
            LibC.close(fds[1]);
        }
    }

    [Fact]
    public void An_injected_clone_gives_the_stub_a_second_thread()
    {
        int pid = StubElf.Start();
        using var child = ChildProcess.Adopt(pid);
        Assert.True(Poll.Until(() => Proc.Stat(pid).State == 'S'));
        using var pt = new PtraceThread();
        var p = SeizedProcess.Seize(pt, pid, LibC.PTRACE_O_TRACESYSGOOD | LibC.PTRACE_O_TRACECLONE);
        ulong stack;
        int tid;
        using (var sys = p.Inject())
        {
            stack = sys.Mmap(0, 64 * 1024, LibC.PROT_READ | LibC.PROT_WRITE, LibC.MAP_PRIVATE | LibC.MAP_ANONYMOUS);
            const long CLONE_VM = 0x100, CLONE_FS = 0x200, CLONE_FILES = 0x400, CLONE_SIGHAND = 0x800,
                CLONE_THREAD = 0x10000, CLONE_SYSVSEM = 0x40000;
            long flags = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD | CLONE_SYSVSEM;
            tid = (int)sys.Check("clone", LibC.SYS_clone, flags, (long)(stack + 64 * 1024), 0, 0, 0);
            Assert.Equal([tid], sys.NewTasks);
        }
        var t = p.AdoptThread(tid);
        var regs = t.GetRegs();
        regs.rip = StubElf.DefaultLoadAddress + StubElf.EntryOffset; // the pause loop
        regs.rsp = stack + 64 * 1024 - 64;
        regs.orig_rax = ulong.MaxValue;
        t.SetRegs(regs);
        p.Resume();
        Assert.True(Poll.Until(() => Proc.Tasks(pid).Count == 2 && Proc.Tasks(pid).All(x => Proc.TaskStat(pid, x).State == 'S')),
            "the new thread does not sit in pause");
        Assert.Contains(tid, Proc.Tasks(pid));
    }
}
