using System.Diagnostics;
using System.Globalization;
using Crisp.Inject;
using Crisp.Native.ProcFs;
using Crisp.TestSupport;
using Xunit;
using Xunit.Abstractions;

namespace Crisp.Native.Tests;

/// <summary>Freezing real processes and running syscalls inside them.</summary>
public class InjectTests : IClassFixture<CompiledPrograms>, IDisposable
{
    private readonly CompiledPrograms _programs;
    private readonly ITestOutputHelper _out;
    private readonly TempDir _dir = new();

    public InjectTests(CompiledPrograms programs, ITestOutputHelper output)
    {
        _programs = programs;
        _out = output;
    }

    public void Dispose() => _dir.Dispose();

    private static (ulong Counter, bool Ok, ulong Address) ReadCounter(string file)
    {
        var parts = Poll.ReadFile(file).Split(' ', StringSplitOptions.RemoveEmptyEntries);
        return (ulong.Parse(parts[0], CultureInfo.InvariantCulture), parts[1] == "ok", Convert.ToUInt64(parts[2].Trim(), 16));
    }

    private static bool AllStopped(int pid) =>
        Proc.Tasks(pid).All(t => Proc.TaskStat(pid, t).State is 't' or 'T');

    [Fact]
    public void Seized_counter_runs_injected_syscalls_and_continues_after_detach()
    {
        var status = _dir["counter.txt"];
        using var child = ChildProcess.Start(_programs.Get("counter"), [status]);
        Assert.True(Poll.Until(() => ReadCounter(status).Counter > 3), "counter did not start");

        using var pt = new PtraceThread();
        var p = SeizedProcess.Seize(pt, child.Pid);
        Assert.Single(p.Tasks);
        Assert.True(AllStopped(child.Pid));
        Assert.Equal(pt.Tid, Proc.Status(child.Pid).TracerPid);

        var (atSeize, ok, counterAddr) = ReadCounter(status);
        Assert.True(ok);
        var word = new byte[8];
        RemoteMemory.Read(child.Pid, counterAddr, word);
        ulong inMemory = BitConverter.ToUInt64(word);
        Assert.True(inMemory >= atSeize && inMemory <= atSeize + 1, $"memory {inMemory}, file {atSeize}");
        Thread.Sleep(30);
        RemoteMemory.Read(child.Pid, counterAddr, word);
        Assert.Equal(inMemory, BitConverter.ToUInt64(word)); // frozen

        using (var sys = p.Inject())
        {
            Assert.Equal(child.Pid, sys.Call(LibC.SYS_getpid));

            const int rounds = 2000;
            var sw = Stopwatch.StartNew();
            for (int i = 0; i < rounds; i++) sys.Call(LibC.SYS_getpid);
            _out.WriteLine($"injected getpid from a test thread: {sw.Elapsed.TotalMicroseconds / rounds:F1} us per call");
            double onThread = pt.Invoke(() =>
            {
                var w = Stopwatch.StartNew();
                for (int i = 0; i < rounds; i++) sys.Call(LibC.SYS_getpid);
                return w.Elapsed.TotalMicroseconds / rounds;
            });
            _out.WriteLine($"injected getpid on the ptrace thread: {onThread:F1} us per call");

            // mmap a read-only area: it appears in maps with the right protection.
            ulong len = 3 * LibC.PageSize;
            ulong addr = sys.Mmap(0, len, LibC.PROT_READ, LibC.MAP_PRIVATE | LibC.MAP_ANONYMOUS);
            var vma = Proc.Maps(child.Pid).SingleOrDefault(v => v.Start == addr);
            Assert.NotNull(vma);
            Assert.Equal(addr + len, vma.End);
            Assert.Equal(LibC.PROT_READ, vma.Prot);
            Assert.False(vma.Shared);

            // process_vm_writev respects the protection, /proc/PID/mem does not.
            var data = new byte[(int)len];
            new Random(7).NextBytes(data);
            var ex = Assert.Throws<SyscallException>(() => RemoteMemory.Write(child.Pid, addr, data));
            Assert.Equal(Errno.EFAULT, ex.Errno);
            using (var mem = new ProcMem(child.Pid)) mem.Write(addr, data);
            var back = new byte[data.Length];
            RemoteMemory.ReadBatch(child.Pid, [new RemoteRange(addr + 2 * LibC.PageSize, LibC.PageSize), new RemoteRange(addr, 2 * LibC.PageSize)], back);
            Assert.Equal(data.AsSpan(2 * LibC.PageSize).ToArray(), back.AsSpan(0, LibC.PageSize).ToArray());
            Assert.Equal(data.AsSpan(0, 2 * LibC.PageSize).ToArray(), back.AsSpan(LibC.PageSize).ToArray());

            sys.Mprotect(addr, len, LibC.PROT_READ | LibC.PROT_WRITE);
            Assert.Equal(LibC.PROT_READ | LibC.PROT_WRITE, Proc.Maps(child.Pid).Single(v => v.Start == addr).Prot);
            RemoteMemory.Write(child.Pid, addr + 100, [1, 2, 3]);
            RemoteMemory.Read(child.Pid, addr + 99, back.AsSpan(0, 5));
            Assert.Equal(new byte[] { data[99], 1, 2, 3, data[103] }, back.AsSpan(0, 5).ToArray());

            sys.Munmap(addr, len);
            Assert.DoesNotContain(Proc.Maps(child.Pid), v => v.Start <= addr && addr < v.End);

            // Pointer arguments through a scratch area: getcwd writes into it.
            using (var scratch = sys.MapScratch())
            {
                ulong buf = scratch.Reserve(512);
                long n = sys.Check("getcwd", 79, (long)buf, 512);
                var cwd = new byte[n];
                scratch.Read(buf, cwd);
                Assert.Equal(Proc.Cwd(child.Pid) + "\0", System.Text.Encoding.UTF8.GetString(cwd));

                // And a path in: access(path, F_OK) on a file that exists and one that does not.
                Assert.Equal(0, sys.Call(21, (long)scratch.PutString(status), 0));
                Assert.Equal(-Errno.ENOENT, sys.Call(21, (long)scratch.PutString(status + ".nope"), 0));
            }

            // An error comes back as -errno and Check turns it into an exception.
            var bad = Assert.Throws<SyscallException>(() => sys.Munmap(addr + 1, 1));
            Assert.Equal(Errno.EINVAL, bad.Errno);
        }

        p.Resume();
        Assert.Equal(0, Proc.Status(child.Pid).TracerPid);
        Assert.True(Poll.Until(() => ReadCounter(status).Counter > inMemory + 5), "counter did not continue");
        Assert.True(ReadCounter(status).Ok, "checksum broken after detach");
    }

    [Fact]
    public void Every_thread_of_a_multithreaded_process_is_stopped_and_resumed()
    {
        var status = _dir["threads.txt"];
        using var child = ChildProcess.Start(_programs.Get("threads"), [status]);
        ulong[] Counters()
        {
            var parts = Poll.ReadFile(status).Split(' ', StringSplitOptions.RemoveEmptyEntries);
            return parts.Skip(1).Select(s => ulong.Parse(s, CultureInfo.InvariantCulture)).ToArray();
        }
        Assert.True(Poll.Until(() => Counters().Length == 4 && Counters().All(c => c > 0)), "threads did not start");
        Assert.True(Poll.Until(() => Proc.Tasks(child.Pid).Count == 5));
        ulong arrayAddr = Convert.ToUInt64(Poll.ReadFile(status).Split(' ')[0], 16);

        using var pt = new PtraceThread();
        var p = SeizedProcess.Seize(pt, child.Pid);
        Assert.Equal(5, p.Tasks.Count);
        Assert.Equal(child.Pid, p.Tasks[0].Tid);
        Assert.True(AllStopped(child.Pid));

        var mem = new byte[32];
        RemoteMemory.Read(child.Pid, arrayAddr, mem);
        Thread.Sleep(30);
        var mem2 = new byte[32];
        RemoteMemory.Read(child.Pid, arrayAddr, mem2);
        Assert.Equal(mem, mem2); // no thread runs

        var fsBases = new HashSet<ulong>();
        foreach (var t in p.Tasks)
        {
            var regs = t.GetRegs();
            Assert.NotEqual(0UL, regs.rip);
            Assert.NotEqual(0UL, regs.rsp);
            fsBases.Add(regs.fs_base);
            Assert.Equal(t.SeizeRegs.rip, regs.rip);
            var xs = t.GetXState();
            Assert.True(xs.Length > 512 + 64, $"xstate {xs.Length} bytes");
            var fp = t.GetFpRegs();
            Assert.Equal(BitConverter.ToUInt32(xs, 24), fp.mxcsr); // FXSAVE mxcsr at 24 in both
            var rseq = t.GetRseq();
            _out.WriteLine($"tid {t.Tid}: rip {regs.rip:x} fs {regs.fs_base:x} xstate {xs.Length} rseq {rseq.rseq_abi_pointer:x}/{rseq.rseq_abi_size}");
            Assert.Equal(Proc.TaskStatus(child.Pid, t.Tid).SigBlk, t.GetSigMask());
        }
        Assert.Equal(5, fsBases.Count); // each thread has its own TLS

        // Registers and masks round-trip.
        var leader = p.Leader;
        ulong oldMask = leader.GetSigMask();
        leader.SetSigMask(oldMask | (1UL << (LibC.SIGUSR2 - 1)));
        Assert.Equal(oldMask | (1UL << (LibC.SIGUSR2 - 1)), leader.GetSigMask());
        leader.SetSigMask(oldMask);
        var x = leader.GetXState();
        leader.SetXState(x);
        leader.SetRegs(leader.GetRegs());

        p.Resume();
        var before = mem2.Chunk(8).Select(c => BitConverter.ToUInt64(c)).ToArray();
        Assert.True(Poll.Until(() =>
        {
            RemoteMemory.Read(child.Pid, arrayAddr, mem);
            var now = mem.Chunk(8).Select(c => BitConverter.ToUInt64(c)).ToArray();
            return now.Zip(before).All(z => z.First > z.Second);
        }), "not every thread resumed");
    }

    [Fact]
    public void A_task_blocked_in_read_gets_a_syscall_and_its_read_restarts()
    {
        var log = _dir["pipe.txt"];
        var (child, writeEnd) = StartPipeReader(log);
        using var _ = child;
        try
        {
            using var pt = new PtraceThread();
            var p = SeizedProcess.Seize(pt, child.Pid);
            var t = p.Leader;
            Assert.Equal(LibC.SYS_read, t.InterruptedSyscall);
            Assert.Equal(-Errno.ERESTARTSYS, t.InterruptedResult);
            Assert.True(t.SyscallWillRestart);
            using (var sys = p.Inject())
            {
                Assert.Equal(child.Pid, sys.Call(LibC.SYS_getpid));
                ulong a = sys.Mmap(0, 4096, LibC.PROT_READ | LibC.PROT_WRITE, LibC.MAP_PRIVATE | LibC.MAP_ANONYMOUS);
                sys.Munmap(a, 4096);
            }
            Assert.Equal(t.SeizeRegs, t.GetRegs()); // everything put back
            p.Resume();

            Thread.Sleep(20);
            Assert.Equal("ready\n", Poll.ReadFile(log)); // still blocked, no spurious EINTR/eof
            WritePipe(writeEnd, "hello\n");
            Assert.True(Poll.Until(() => Poll.ReadFile(log) == "ready\ngot hello\n"), Poll.ReadFile(log));
        }
        finally { LibC.close(writeEnd); }
    }

    private (ChildProcess Child, int WriteEnd) StartPipeReader(string log)
    {
        var fds = new int[2];
        unsafe { fixed (int* f = fds) Errno.Check(LibC.pipe2(f, LibC.O_CLOEXEC), "pipe2", "test"); }
        ChildProcess child;
        try
        {
            int pid = ProcessSpawner.Spawn(new SpawnOptions
            {
                Path = _programs.Get("pipe"),
                Argv = ["pipe", log],
                Stdin = StdioSource.FromFd(fds[0]),
                Stdout = StdioSource.DevNull(true),
                Stderr = StdioSource.DevNull(true),
            });
            child = ChildProcess.Adopt(pid);
        }
        finally { LibC.close(fds[0]); }
        Assert.True(Poll.Until(() => Poll.ReadFile(log).Contains("ready") && Proc.Stat(child.Pid).State == 'S'));
        Thread.Sleep(20);
        return (child, fds[1]);
    }

    private static unsafe void WritePipe(int fd, string text)
    {
        var msg = System.Text.Encoding.UTF8.GetBytes(text);
        fixed (byte* m = msg) Errno.Check(LibC.write(fd, m, (nuint)msg.Length), "write", "pipe");
    }

    /// <summary>
    /// CallAll runs a table of calls as one batch (one stop for all): the same results as one call
    /// at a time, errors included, outputs in scratch memory, the patched code put back, and the
    /// process runs on unharmed after detach.
    /// </summary>
    [Fact]
    public void A_batch_of_injected_syscalls_gives_what_single_calls_give()
    {
        var status = _dir["counter-batch.txt"];
        using var child = ChildProcess.Start(_programs.Get("counter"), [status]);
        Assert.True(Poll.Until(() => ReadCounter(status).Counter > 3), "counter did not start");
        using var pt = new PtraceThread();
        var p = SeizedProcess.Seize(pt, child.Pid);
        var (atSeize, _, _) = ReadCounter(status);
        using (var sys = p.Inject())
        using (var scratch = sys.MapScratch(4 * LibC.PageSize))
        {
            ulong code = sys.CodeAddress;
            var codeBefore = Enumerable.Range(0, 8).Select(w => p.Leader.PeekWord(code + (ulong)(8 * w))).ToArray();
            const int signals = 40;
            ulong actions = scratch.Reserve(32 * signals);
            var calls = new List<(long, long, long, long, long)> { (LibC.SYS_getpid, 0, 0, 0, 0), (LibC.SYS_gettid, 0, 0, 0, 0) };
            for (int sig = 1; sig <= signals; sig++) calls.Add((LibC.SYS_rt_sigaction, sig, 0, (long)actions + 32 * (sig - 1), 8));
            calls.Add((LibC.SYS_munmap, 1, 1, 0, 0)); // EINVAL
            long countBefore = sys.Count;
            var r = sys.CallAll(scratch, System.Runtime.InteropServices.CollectionsMarshal.AsSpan(calls));
            Assert.Equal(calls.Count, sys.Count - countBefore);
            var sw = Stopwatch.StartNew();
            Assert.Equal(r, sys.CallAll(scratch, System.Runtime.InteropServices.CollectionsMarshal.AsSpan(calls))); // timed warm
            double batchUs = sw.Elapsed.TotalMicroseconds;
            Assert.Equal(child.Pid, r[0]);
            Assert.Equal(child.Pid, r[1]);
            Assert.Equal(-Errno.EINVAL, r[^1]);
            var batched = new byte[32 * signals];
            scratch.Read(actions, batched);

            // The same, one at a time.
            ulong one = scratch.Reserve(32);
            var single = new byte[32 * signals];
            sw.Restart();
            for (int sig = 1; sig <= signals; sig++)
            {
                long rc = sys.Call(LibC.SYS_rt_sigaction, sig, 0, (long)one, 8);
                Assert.Equal(r[1 + sig], rc);
                scratch.Read(one, single.AsSpan(32 * (sig - 1), 32));
            }
            double singleUs = sw.Elapsed.TotalMicroseconds;
            Assert.Equal(single, batched);
            Assert.All(r.Skip(2).Take(signals), rc => Assert.Equal(0, rc)); // reading SIGKILL's action is allowed too
            _out.WriteLine($"{calls.Count} calls in one batch: {batchUs:F0} us; {signals} one at a time: {singleUs:F0} us");
            Assert.Equal(codeBefore, Enumerable.Range(0, 8).Select(w => p.Leader.PeekWord(code + (ulong)(8 * w))).ToArray());
        }
        Assert.Empty(p.Leader.HeldSignals); // the batch's own SIGTRAP was not kept for the process
        p.Resume();
        Assert.True(Poll.Until(() => ReadCounter(status).Counter > atSeize + 5), "counter did not continue");
        Assert.True(ReadCounter(status).Ok, "checksum broken after detach");
    }

    /// <summary>
    /// A task that ignores SIGTRAP (or blocks it, or has one pending) would be changed by the
    /// batch's forced SIGTRAP: CallAll runs its calls one by one there, and the disposition stays.
    /// </summary>
    [Fact]
    public void A_batch_in_a_task_that_ignores_SIGTRAP_leaves_it_ignored()
    {
        // An ignored disposition survives exec: the sleeper starts with SIGTRAP ignored.
        using var child = ChildProcess.Start("/bin/sh", ["-c", "trap '' TRAP; exec sleep 1000"]);
        const ulong trapBit = 1UL << (LibC.SIGTRAP - 1);
        Assert.True(Poll.Until(() => File.ReadAllText($"/proc/{child.Pid}/comm").Trim() == "sleep" && (Proc.Status(child.Pid).SigIgn & trapBit) != 0),
            "sleep with SIGTRAP ignored did not start");
        using var pt = new PtraceThread();
        var p = SeizedProcess.Seize(pt, child.Pid);
        using (var sys = p.Inject())
        using (var scratch = sys.MapScratch())
        {
            var r = sys.CallAll(scratch, [(LibC.SYS_getpid, 0, 0, 0, 0), (LibC.SYS_munmap, 1, 1, 0, 0)]);
            Assert.Equal([child.Pid, -Errno.EINVAL], r);
        }
        p.Resume();
        Assert.NotEqual(0UL, Proc.Status(child.Pid).SigIgn & trapBit);
        Assert.Equal('S', Proc.Stat(child.Pid).State);
    }

    [Fact]
    public void A_signal_arriving_during_an_injected_syscall_is_held_and_delivered_after_detach()
    {
        var log = _dir["pipe-signal.txt"];
        var (child, writeEnd) = StartPipeReader(log);
        using var _ = child;
        try
        {
            using var pt = new PtraceThread();
            var p = SeizedProcess.Seize(pt, child.Pid);
            Assert.Empty(p.Leader.HeldSignals);
            using (var sys = p.Inject())
            using (var scratch = sys.MapScratch())
            {
                // nanosleep(150 ms) inside the task; SIGUSR1 arrives 30 ms in.
                var ts = new byte[16];
                BitConverter.TryWriteBytes(ts.AsSpan(8), 150_000_000L);
                ulong tsAddr = scratch.Put(ts);
                var sender = new Thread(() => { Thread.Sleep(30); LibC.kill(child.Pid, LibC.SIGUSR1); });
                sender.Start();
                var sw = Stopwatch.StartNew();
                Assert.Equal(0, sys.Call(35, (long)tsAddr, 0)); // the kernel restarted the interrupted sleep
                Assert.True(sw.ElapsedMilliseconds >= 140, $"slept {sw.ElapsedMilliseconds} ms");
                sender.Join();
            }
            Assert.Contains(p.Leader.HeldSignals, h => h.Signo == LibC.SIGUSR1);
            Assert.DoesNotContain("usr1", Poll.ReadFile(log)); // not run while frozen
            p.Resume();
            Assert.True(Poll.Until(() => Poll.ReadFile(log).Contains("usr1")), "held SIGUSR1 was lost");
            WritePipe(writeEnd, "after\n");
            Assert.True(Poll.Until(() => Poll.ReadFile(log).EndsWith("got after\n")), Poll.ReadFile(log));
        }
        finally { LibC.close(writeEnd); }
    }

    [Fact]
    public void Signals_sent_just_before_seizing_are_never_lost()
    {
        var status = _dir["sleep-race.txt"];
        using var child = ChildProcess.Start(_programs.Get("sleeper"), [status]);
        int Usr1() => int.Parse(Poll.ReadFile(status).Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture);
        Assert.True(Poll.Until(() => Poll.ReadFile(status).Length > 0));
        using var pt = new PtraceThread();
        int held = 0;
        const int rounds = 15;
        for (int i = 1; i <= rounds; i++)
        {
            LibC.kill(child.Pid, LibC.SIGUSR1);
            var p = SeizedProcess.Seize(pt, child.Pid);
            held += p.Leader.HeldSignals.Count;
            p.Resume();
            Assert.True(Poll.Until(() => Usr1() == i), $"round {i}: handler ran {Usr1()} times");
        }
        _out.WriteLine($"{held} of {rounds} signals were caught in a signal-delivery-stop while seizing");
    }

    [Fact]
    public void A_task_in_nanosleep_restarts_it_and_pending_signals_survive_the_seize()
    {
        var status = _dir["sleep.txt"];
        using var child = ChildProcess.Start(_programs.Get("sleeper"), [status]);
        (ulong Rounds, int Usr1) Read()
        {
            var parts = Poll.ReadFile(status).Split(' ', StringSplitOptions.RemoveEmptyEntries);
            return (ulong.Parse(parts[0], CultureInfo.InvariantCulture), int.Parse(parts[1], CultureInfo.InvariantCulture));
        }
        Assert.True(Poll.Until(() => Poll.ReadFile(status).Length > 0 && Proc.Stat(child.Pid).State == 'S'));

        using var pt = new PtraceThread();
        var p = SeizedProcess.Seize(pt, child.Pid);
        var t = p.Leader;
        Assert.Equal(35, t.InterruptedSyscall); // SYS_nanosleep
        Assert.Equal(-Errno.ERESTART_RESTARTBLOCK, t.InterruptedResult);

        // A signal sent while frozen stays queued (shared queue: kill() is process-directed).
        Errno.Check(LibC.kill(child.Pid, LibC.SIGUSR1), "kill", "child");
        var shared = t.PeekPendingSignals(shared: true);
        Assert.Contains(shared, s => s.si_signo == LibC.SIGUSR1);
        Assert.Empty(t.PeekPendingSignals(shared: false));

        using (var sys = p.Inject())
            Assert.Equal(child.Pid, sys.Call(LibC.SYS_getpid));
        p.Resume();

        Assert.True(Poll.Until(() => Read().Usr1 == 1), "SIGUSR1 was lost");
        var r0 = Read().Rounds;
        Assert.True(Poll.Until(() => Read().Rounds >= r0 + 2), "sleep loop did not continue");
    }

    [Fact]
    public void A_process_tree_is_frozen_and_thawed_together()
    {
        var status = _dir["tree"];
        using var parent = ChildProcess.Start(_programs.Get("forker"), [status]);
        ulong Count(string which) => ulong.Parse(Poll.ReadFile(status + "." + which).Split(' ', StringSplitOptions.RemoveEmptyEntries)[0], CultureInfo.InvariantCulture);
        int ChildPid() => int.Parse(Poll.ReadFile(status + ".child").Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture);
        Assert.True(Poll.Until(() => Count("parent") > 2 && Count("child") > 2));
        int childPid = ChildPid();

        using var pt = new PtraceThread();
        SeizedTree tree;
        try
        {
            tree = SeizedTree.Seize(pt, parent.Pid);
        }
        catch
        {
            LibC.kill(childPid, LibC.SIGKILL);
            throw;
        }
        try
        {
            Assert.Equal([parent.Pid, childPid], tree.Processes.Select(x => x.Pid).ToArray());
            Assert.True(AllStopped(parent.Pid) && AllStopped(childPid));
            var (pc, cc) = (Count("parent"), Count("child"));
            Thread.Sleep(30);
            Assert.Equal((pc, cc), (Count("parent"), Count("child")));
            tree.Resume();
            Assert.True(Poll.Until(() => Count("parent") > pc + 2 && Count("child") > cc + 2), "tree did not resume");
        }
        finally
        {
            // The grandchild is not ours to reap: its parent (our child) will, once it dies too.
            LibC.kill(childPid, LibC.SIGKILL);
        }
    }

    [Fact]
    public void A_stopped_process_can_be_injected_and_stays_stopped_after_detach()
    {
        var status = _dir["stopped.txt"];
        using var child = ChildProcess.Start(_programs.Get("sleeper"), [status]);
        ulong Rounds() => ulong.Parse(Poll.ReadFile(status).Split(' ', StringSplitOptions.RemoveEmptyEntries)[0], CultureInfo.InvariantCulture);
        Assert.True(Poll.Until(() => Poll.ReadFile(status).Length > 0));
        LibC.kill(child.Pid, LibC.SIGSTOP);
        Assert.True(Poll.Until(() => Proc.Stat(child.Pid).State == 'T'));

        using var pt = new PtraceThread();
        var p = SeizedProcess.Seize(pt, child.Pid);
        Assert.True(p.Leader.WasGroupStopped);
        using (var sys = p.Inject())
            Assert.Equal(child.Pid, sys.Call(LibC.SYS_getpid));
        p.Resume();

        var r = Rounds();
        Thread.Sleep(450);
        Assert.Equal('T', Proc.Stat(child.Pid).State);
        Assert.Equal(r, Rounds());
        LibC.kill(child.Pid, LibC.SIGCONT);
        Assert.True(Poll.Until(() => Rounds() > r), "did not continue after SIGCONT");
    }

    [Fact]
    public void Kill_ends_a_seized_multithreaded_process()
    {
        var status = _dir["kill.txt"];
        using var child = ChildProcess.Start(_programs.Get("threads"), [status]);
        Assert.True(Poll.Until(() => Proc.Tasks(child.Pid).Count == 5));
        using var pt = new PtraceThread();
        var p = SeizedProcess.Seize(pt, child.Pid);
        p.Kill();
        Assert.All(p.Tasks, t => Assert.True(t.Released));
        Assert.False(Directory.Exists($"/proc/{child.Pid}")); // reaped: we are its parent
    }

    [Fact]
    public void Batched_reads_span_more_than_iov_max_ranges()
    {
        var status = _dir["batch.txt"];
        using var child = ChildProcess.Start(_programs.Get("counter"), [status]);
        Assert.True(Poll.Until(() => ReadCounter(status).Counter > 1));
        using var pt = new PtraceThread();
        var p = SeizedProcess.Seize(pt, child.Pid);
        try
        {
            using var sys = p.Inject();
            const int pages = 64;
            ulong area = sys.Mmap(0, pages * LibC.PageSize, LibC.PROT_READ | LibC.PROT_WRITE, LibC.MAP_PRIVATE | LibC.MAP_ANONYMOUS);
            var data = new byte[pages * LibC.PageSize];
            new Random(3).NextBytes(data);
            RemoteMemory.Write(child.Pid, area, data);
            // 3000 ranges of 40 bytes at scattered offsets, in reverse order.
            var ranges = Enumerable.Range(0, 3000).Reverse().Select(i => new RemoteRange(area + (ulong)(i * 87), 40)).ToArray();
            var got = new byte[3000 * 40];
            RemoteMemory.ReadBatch(child.Pid, ranges, got);
            for (int k = 0; k < ranges.Length; k++)
            {
                int off = (int)(ranges[k].Address - area);
                Assert.True(data.AsSpan(off, 40).SequenceEqual(got.AsSpan(k * 40, 40)), $"range {k}");
            }
            // A range that is not mapped names its address.
            var ex = Assert.Throws<SyscallException>(() => RemoteMemory.ReadBatch(child.Pid, [new RemoteRange(area, 16), new RemoteRange(8, 16)], got));
            Assert.Contains("0x8", ex.Message);
            sys.Munmap(area, pages * LibC.PageSize);
        }
        finally { p.Resume(); }
    }

    [Fact]
    public void A_process_whose_leader_exited_is_seized_through_its_live_thread()
    {
        var status = _dir["zombie.txt"];
        using var child = ChildProcess.Start(_programs.Get("zombie-leader"), [status]);
        ulong Count() => ulong.Parse(Poll.ReadFile(status).Trim(), CultureInfo.InvariantCulture);
        Assert.True(Poll.Until(() => Count() > 2 && Proc.Stat(child.Pid).State == 'Z'));

        using var pt = new PtraceThread();
        var p = SeizedProcess.Seize(pt, child.Pid);
        Assert.True(p.LeaderIsZombie);
        var worker = Assert.Single(p.Tasks);
        Assert.NotEqual(child.Pid, worker.Tid);
        Assert.Same(worker, p.Leader);
        using (var sys = p.Inject())
            Assert.Equal(child.Pid, sys.Call(LibC.SYS_getpid));
        var c = Count();
        Thread.Sleep(20);
        Assert.Equal(c, Count());
        p.Resume();
        Assert.True(Poll.Until(() => Count() > c + 2));
    }
}
