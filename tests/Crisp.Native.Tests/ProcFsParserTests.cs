using Crisp.Native.ProcFs;
using Xunit;

namespace Crisp.Native.Tests;

[Trait("Category", "Unit")]
public class ProcFsParserTests
{
    [Fact]
    public void Limits_in_rlimit_order_with_unlimited_and_lines_without_units()
    {
        const string text = """
            Limit                     Soft Limit           Hard Limit           Units     
            Max cpu time              unlimited            unlimited            seconds   
            Max file size             unlimited            unlimited            bytes     
            Max data size             unlimited            unlimited            bytes     
            Max stack size            8388608              unlimited            bytes     
            Max core file size        0                    unlimited            bytes     
            Max resident set          unlimited            unlimited            bytes     
            Max processes             96362                96362                processes 
            Max open files            1024                 524288               files     
            Max locked memory         8388608              8388608              bytes     
            Max address space         unlimited            unlimited            bytes     
            Max file locks            unlimited            unlimited            locks     
            Max pending signals       96362                96362                signals   
            Max msgqueue size         819200               819200               bytes     
            Max nice priority         0                    0                    
            Max realtime priority     0                    0                    
            Max realtime timeout      unlimited            unlimited            us        

            """;
        var l = Limits.Parse(text);
        Assert.Equal(LibC.RLIM_NLIMITS, l.Count);
        Assert.Equal((LibC.RLIM_INFINITY, LibC.RLIM_INFINITY), l[0]);
        Assert.Equal((8388608UL, LibC.RLIM_INFINITY), l[3]);
        Assert.Equal((1024UL, 524288UL), l[7]);
        Assert.Equal((0UL, 0UL), l[13]);
        Assert.Equal((LibC.RLIM_INFINITY, LibC.RLIM_INFINITY), l[15]);
        Assert.Throws<FormatException>(() => Limits.Parse("Max cpu time  unlimited unlimited seconds\n"));
        Assert.Throws<FormatException>(() => Limits.Parse("Limit                     Soft Limit           Hard Limit           Units\nMax cpu time              lots                 unlimited            seconds\n"));
    }

    [Fact]
    public void Maps_line_with_spaces_in_path_and_deleted_suffix()
    {
        var v = MapsParser.ParseLine("7f12a0000000-7f12a0021000 rw-s 00003000 fd:01 1234567                    /tmp/my dir/a file (1).bin (deleted)");
        Assert.Equal(0x7f12a0000000UL, v.Start);
        Assert.Equal(0x7f12a0021000UL, v.End);
        Assert.Equal(LibC.PROT_READ | LibC.PROT_WRITE, v.Prot);
        Assert.True(v.Shared);
        Assert.Equal(0x3000UL, v.Offset);
        Assert.Equal(0xfdu, v.DevMajor);
        Assert.Equal(1u, v.DevMinor);
        Assert.Equal(1234567UL, v.Inode);
        Assert.Equal("/tmp/my dir/a file (1).bin", v.Path);
        Assert.True(v.Deleted);
    }

    [Fact]
    public void Maps_anonymous_and_special_lines()
    {
        var maps = MapsParser.ParseMaps(
            "55d0c0a00000-55d0c0a21000 rw-p 00000000 00:00 0                          [heap]\n" +
            "7ffd1c3f0000-7ffd1c411000 rw-p 00000000 00:00 0                          [stack]\n" +
            "7f0000000000-7f0000001000 r-xp 00000000 00:00 0 \n" +
            "ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]\n");
        Assert.Equal(4, maps.Count);
        Assert.Equal("[heap]", maps[0].Path);
        Assert.False(maps[0].Shared);
        Assert.True(maps[0].IsAnonymous && maps[0].IsSpecial);
        Assert.Equal("", maps[2].Path);
        Assert.Equal(LibC.PROT_READ | LibC.PROT_EXEC, maps[2].Prot);
        Assert.True(maps[3].IsVsyscall);
        Assert.Equal(LibC.PROT_EXEC, maps[3].Prot);
        Assert.Equal(0x1000UL, maps[3].Length);
    }

    [Fact]
    public void Maps_path_that_merely_contains_deleted_is_not_deleted()
    {
        var v = MapsParser.ParseLine("400000-401000 r--p 00000000 08:01 42 /opt/x (deleted) y");
        Assert.Equal("/opt/x (deleted) y", v.Path);
        Assert.False(v.Deleted);
    }

    [Fact]
    public void Smaps_fields_and_vmflags()
    {
        const string text =
            "7f1000000000-7f1000004000 rw-p 00000000 00:00 0 \n" +
            "Size:                 16 kB\n" +
            "KernelPageSize:        4 kB\n" +
            "Rss:                   8 kB\n" +
            "Anonymous:             8 kB\n" +
            "Swap:                  0 kB\n" +
            "THPeligible:    0\n" +
            "VmFlags: rd wr mr mw me gd lo ac dd wf sd xx \n" +
            "7f1000004000-7f1000005000 r--s 00001000 00:05 77                         /memfd:shm (deleted)\n" +
            "Size:                  4 kB\n" +
            "VmFlags: rd sh mr mw me ms sd \n";
        var list = MapsParser.ParseSmaps(text);
        Assert.Equal(2, list.Count);
        var a = list[0];
        Assert.Equal(16UL, a.SmapsKb["Size"]);
        Assert.Equal(8UL, a.SmapsKb["Rss"]);
        Assert.Equal(8UL, a.SmapsKb["Anonymous"]);
        Assert.True(a.Flags.HasFlag(VmFlags.gd));
        Assert.True(a.Flags.HasFlag(VmFlags.lo));
        Assert.True(a.Flags.HasFlag(VmFlags.dd));
        Assert.True(a.Flags.HasFlag(VmFlags.wf));
        Assert.True(a.Flags.HasFlag(VmFlags.sd));
        Assert.True(a.Flags.HasFlag(VmFlags.Unknown)); // "xx"
        Assert.False(a.Flags.HasFlag(VmFlags.ht));
        Assert.Contains("xx", a.RawVmFlags);
        var b = list[1];
        Assert.Equal("/memfd:shm", b.Path);
        Assert.True(b.Deleted);
        Assert.True(b.Shared);
        Assert.True(b.Flags.HasFlag(VmFlags.sh) && b.Flags.HasFlag(VmFlags.ms));
        Assert.False(b.Flags.HasFlag(VmFlags.Unknown));
    }

    [Fact]
    public void Stat_comm_with_parens_and_spaces()
    {
        // Fields after comm: state ppid pgrp session tty_nr tpgid flags ... up to exit_code (52).
        var fields = new List<string> { "S", "100", "200", "300", "34816", "-1", "4194560" };
        for (int n = 10; n <= 52; n++) fields.Add(n.ToString());
        var text = "4242 (a) (b) c)) " + string.Join(' ', fields) + "\n";
        var st = ProcStat.Parse(text);
        Assert.Equal(4242, st.Pid);
        Assert.Equal("a) (b) c)", st.Comm);
        Assert.Equal('S', st.State);
        Assert.Equal(100, st.PPid);
        Assert.Equal(200, st.Pgrp);
        Assert.Equal(300, st.Session);
        Assert.Equal(34816, st.TtyNr);
        Assert.Equal(-1, st.Tpgid);
        Assert.Equal(4194560u, st.Flags);
        Assert.Equal(26UL, st.StartCode);
        Assert.Equal(27UL, st.EndCode);
        Assert.Equal(45UL, st.StartData);
        Assert.Equal(46UL, st.EndData);
        Assert.Equal(47UL, st.StartBrk);
        Assert.Equal(48UL, st.ArgStart);
        Assert.Equal(49UL, st.ArgEnd);
        Assert.Equal(50UL, st.EnvStart);
        Assert.Equal(51UL, st.EnvEnd);
        Assert.Equal(52, st.ExitCode);
    }

    [Fact]
    public void Stat_of_a_live_process_matches_status()
    {
        int pid = LibC.getpid();
        var st = Proc.Stat(pid);
        var status = Proc.Status(pid);
        Assert.Equal(pid, st.Pid);
        Assert.Equal(status.PPid, st.PPid);
        Assert.NotEqual(0UL, st.StartBrk);
        Assert.True(st.ArgEnd > st.ArgStart && st.EnvEnd > st.EnvStart);
    }

    [Fact]
    public void Status_fields()
    {
        const string text =
            "Name:\tmy prog\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t4242\nNgid:\t0\nPid:\t4243\nPPid:\t1\nTracerPid:\t0\n" +
            "Uid:\t1000\t1001\t1002\t1003\nGid:\t2000\t2001\t2002\t2003\nFDSize:\t64\nGroups:\t4 24 27 \n" +
            "NStgid:\t4242\t7\nNSpid:\t4243\t8\nNSpgid:\t4242\t7\nNSsid:\t4242\t7\nThreads:\t3\n" +
            "SigQ:\t0/63429\nSigPnd:\t0000000000000100\nShdPnd:\t0000000000004000\nSigBlk:\t0000000000010000\n" +
            "SigIgn:\t0000000000001000\nSigCgt:\t0000000180000002\nCapInh:\t0000000000000000\nCapPrm:\t000001ffffffffff\n" +
            "CapEff:\t000001ffffffffff\nCapBnd:\t000001ffffffffff\nCapAmb:\t0000000000000000\nNoNewPrivs:\t1\nSeccomp:\t2\n" +
            "Seccomp_filters:\t1\n";
        var s = ProcStatus.Parse(text);
        Assert.Equal("my prog", s.Name);
        Assert.Equal('S', s.State);
        Assert.Equal(4242, s.Tgid);
        Assert.Equal(4243, s.Pid);
        Assert.Equal(1, s.PPid);
        Assert.Equal(new uint[] { 1000, 1001, 1002, 1003 }, s.Uid);
        Assert.Equal(new uint[] { 2000, 2001, 2002, 2003 }, s.Gid);
        Assert.Equal(new uint[] { 4, 24, 27 }, s.Groups);
        Assert.Equal(new[] { 4243, 8 }, s.NSpid);
        Assert.Equal(new[] { 4242, 7 }, s.NStgid);
        Assert.Equal(3, s.Threads);
        Assert.Equal(0x100UL, s.SigPnd);
        Assert.Equal(0x4000UL, s.ShdPnd);
        Assert.Equal(0x10000UL, s.SigBlk);
        Assert.Equal(0x1000UL, s.SigIgn);
        Assert.Equal(0x180000002UL, s.SigCgt);
        Assert.Equal(0UL, s.CapInh);
        Assert.Equal(0x1ffffffffffUL, s.CapPrm);
        Assert.Equal(0x1ffffffffffUL, s.CapEff);
        Assert.Equal(0x1ffffffffffUL, s.CapBnd);
        Assert.Equal(1, s.NoNewPrivs);
        Assert.Equal(2, s.Seccomp);
        Assert.Equal("0022", s.Fields["Umask"]);
    }

    [Fact]
    public void Status_empty_groups()
    {
        var s = ProcStatus.Parse("Name:\tx\nGroups:\t\nUid:\t0\t0\t0\t0\n");
        Assert.Empty(s.Groups);
    }

    [Fact]
    public void FdInfo_octal_flags_and_extra_lines()
    {
        var f = FdInfo.Parse("pos:\t4096\nflags:\t02100002\nmnt_id:\t15\nino:\t98765\neventfd-count:                0\n");
        Assert.Equal(4096, f.Pos);
        Assert.Equal(LibC.O_CLOEXEC | LibC.O_LARGEFILE | LibC.O_RDWR, f.Flags);
        Assert.Equal(15, f.MntId);
        Assert.Equal(98765UL, f.Ino);
        Assert.Equal("0", f.Fields["eventfd-count"]);
    }

    [Fact]
    public void Pagemap_entry_bits()
    {
        var e = new PagemapEntry((1UL << 63) | (1UL << 61) | (1UL << 56) | 0x12345);
        Assert.True(e.Present);
        Assert.False(e.Swapped);
        Assert.True(e.FileOrShared);
        Assert.True(e.Exclusive);
        Assert.Equal(0x12345UL, e.Pfn);
        Assert.True(e.HasData);
        var s = new PagemapEntry(1UL << 62);
        Assert.True(s.Swapped && s.HasData && !s.Present);
        Assert.False(new PagemapEntry(0).HasData);
    }

    [Fact]
    public void Auxv_pairs_until_null()
    {
        var raw = new byte[16 * 4];
        void Put(int i, ulong t, ulong v) { BitConverter.TryWriteBytes(raw.AsSpan(i * 16), t); BitConverter.TryWriteBytes(raw.AsSpan(i * 16 + 8), v); }
        Put(0, Auxv.AT_PAGESZ, 4096);
        Put(1, Auxv.AT_ENTRY, 0x401000);
        Put(2, Auxv.AT_NULL, 0);
        Put(3, 99, 99); // after AT_NULL: ignored
        var a = Auxv.Parse(raw);
        Assert.Equal(3, a.Count);
        Assert.Equal((Auxv.AT_ENTRY, 0x401000UL), a[1]);
    }
}
