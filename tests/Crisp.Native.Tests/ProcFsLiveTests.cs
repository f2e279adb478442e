using Crisp.Inject;
using Crisp.Native.ProcFs;
using Crisp.TestSupport;
using Xunit;

namespace Crisp.Native.Tests;

/// <summary>The procfs readers on real processes.</summary>
public unsafe class ProcFsLiveTests
{
    [Fact]
    public void Limits_of_this_process_match_prlimit()
    {
        var l = Limits.Read(Environment.ProcessId);
        for (int r = 0; r < LibC.RLIM_NLIMITS; r++)
        {
            LibC.RLimit got;
            unsafe { Errno.Check(LibC.prlimit(0, r, null, &got), "prlimit", $"self, resource {r}"); }
            Assert.Equal((got.rlim_cur, got.rlim_max), l[r]);
        }
    }

    [Fact]
    public void Pagemap_marks_touched_pages_present_and_untouched_ones_absent()
    {
        const int pages = 64;
        nint mem = LibC.mmap(0, pages * LibC.PageSize, LibC.PROT_READ | LibC.PROT_WRITE, LibC.MAP_PRIVATE | LibC.MAP_ANONYMOUS, -1, 0);
        Assert.NotEqual(LibC.MAP_FAILED, mem);
        try
        {
            for (int i = 0; i < pages; i += 3) ((byte*)mem)[i * LibC.PageSize] = 1;
            using var pm = new ProcPagemap(LibC.getpid());
            var e = pm.Read((ulong)mem, (ulong)mem + pages * LibC.PageSize);
            Assert.Equal(pages, e.Length);
            for (int i = 0; i < pages; i++)
            {
                var entry = new PagemapEntry(e[i]);
                Assert.Equal(i % 3 == 0, entry.Present);
                if (entry.Present)
                {
                    Assert.True(entry.Exclusive);
                    Assert.False(entry.FileOrShared);
                    Assert.NotEqual(0UL, entry.Pfn); // root with CAP_SYS_ADMIN sees PFNs
                }
            }
        }
        finally { LibC.munmap(mem, pages * LibC.PageSize); }
    }

    [Fact]
    public void Smaps_of_self_has_vmflags_for_every_vma()
    {
        var smaps = Proc.Smaps(LibC.getpid());
        var maps = Proc.Maps(LibC.getpid());
        Assert.True(smaps.Count >= maps.Count - 5); // maps change a little between two reads
        Assert.All(smaps, v => Assert.NotEmpty(v.RawVmFlags));
        Assert.All(smaps.Where(v => (v.Prot & LibC.PROT_READ) != 0 && !v.IsVsyscall), v => Assert.True(v.Flags.HasFlag(VmFlags.rd), v.ToString()));
        var stack = smaps.Single(v => v.Path == "[stack]");
        Assert.True(stack.Flags.HasFlag(VmFlags.gd)); // grows down
        Assert.True(stack.SmapsKb.ContainsKey("Rss"));
    }

    [Fact]
    public void Fd_links_fdinfo_auxv_and_paths_of_self()
    {
        int pid = LibC.getpid();
        using var dir = new TempDir();
        var path = dir["a file (x)"];
        File.WriteAllText(path, "hello");
        int fd = Errno.Check(LibC.open(path, LibC.O_RDWR | LibC.O_APPEND, 0), "open", path);
        try
        {
            LibC.lseek(fd, 3, LibC.SEEK_SET);
            Assert.Contains(fd, Proc.Fds(pid));
            Assert.Equal(path, Proc.FdTarget(pid, fd));
            var info = Proc.FdInfo(pid, fd);
            Assert.Equal(3, info.Pos);
            Assert.Equal(LibC.O_RDWR | LibC.O_APPEND, info.Flags & (LibC.O_ACCMODE | LibC.O_APPEND));
            int fd2 = Errno.Check(LibC.open(path, LibC.O_RDONLY, 0), "open", path);
            int fd3 = Errno.Check(LibC.open("/proc/self/exe", LibC.O_RDONLY, 0), "open", "exe");
            Assert.NotEqual(0UL, info.Ino);
            Assert.Equal(info.Ino, Proc.FdInfo(pid, fd2).Ino);
            Assert.NotEqual(info.Ino, Proc.FdInfo(pid, fd3).Ino);
            Assert.Equal(info.MntId, Proc.FdInfo(pid, fd2).MntId);
            LibC.close(fd2);
            LibC.close(fd3);
            File.Delete(path);
            Assert.Equal(path + " (deleted)", Proc.FdTarget(pid, fd));
        }
        finally { LibC.close(fd); }
        Assert.Equal(Environment.CurrentDirectory, Proc.Cwd(pid));
        Assert.Equal("/", Proc.Root(pid));
        Assert.Equal(Environment.ProcessPath, Proc.Exe(pid));
        var auxv = Proc.AuxvEntries(pid);
        Assert.Contains(auxv, a => a.Type == Auxv.AT_PAGESZ && a.Value == 4096);
        Assert.Contains(auxv, a => a.Type == Auxv.AT_SYSINFO_EHDR && a.Value == Proc.Maps(pid).Single(v => v.IsVdso).Start);
        Assert.Equal(Auxv.AT_NULL, auxv[^1].Type);
    }
}
