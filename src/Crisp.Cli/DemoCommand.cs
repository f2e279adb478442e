using System.CommandLine;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Crisp.Checkpoint.Check;
using Crisp.Native;

namespace Crisp.Cli;

/// <summary>
/// `crisp demo`: crisp's main job on a built-in example, for a newcomer on a fresh machine.
/// A python3 process holding memory with a known hash ticks into a log; crisp migrates it
/// lazily over loopback to a `crisp agent` (the same commands a user would run), shows it
/// ticking on the other side with its counter and memory hash intact, asks it to verify
/// every byte, and prints the figures. Needs root, python3 and the kernel features
/// `crisp check` lists; nothing else (no compiler).
/// </summary>
public static class DemoCommand
{
    private const string Workload = """
        import hashlib, os, signal, sys, time
        mib, log = int(sys.argv[1]), sys.argv[2]
        data = bytearray(mib << 20)
        for i in range(mib):
            data[i << 20:(i + 1) << 20] = hashlib.sha256(b"crisp-%d" % i).digest() * 32768
        digest = hashlib.sha256(data).hexdigest()[:16]
        check = False
        def on_usr1(sig, frame):
            global check
            check = True
        signal.signal(signal.SIGUSR1, on_usr1)
        out = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        n = 0
        while True:
            n += 1
            os.write(out, b"tick %d pid=%d memory=%d MiB sha256=%s\n" % (n, os.getpid(), mib, digest.encode()))
            if check:
                check = False
                t = time.perf_counter()
                ok = hashlib.sha256(data).hexdigest()[:16] == digest
                os.write(out, b"verify %s (%d MiB hashed in %.0f ms)\n" % (b"ok" if ok else b"BAD", mib, (time.perf_counter() - t) * 1000))
            time.sleep(0.1)
        """;

    public static Command Create()
    {
        var mib = new Option<int>("--mib") { Description = "memory the example process holds", DefaultValueFactory = _ => 256 };
        var cmd = new Command("demo", "Migrate a live example process lazily over loopback and show its figures");
        cmd.Options.Add(mib);
        cmd.SetAction(r => CrispCommand.Guard("demo", () => Run(r.GetValue(mib))));
        return cmd;
    }

    private static int Run(int mib)
    {
        if (LibC.geteuid() != 0)
        {
            Console.Error.WriteLine("crisp demo must run as root (ptrace, userfaultfd and PR_SET_MM need it): sudo crisp demo");
            return CrispCommand.ExitFailed;
        }
        var missing = KernelCheck.Evaluate(KernelCheck.Probe()).Where(f => f.Required && !f.Present).ToList();
        if (missing.Count > 0)
        {
            foreach (var f in missing) Console.Error.WriteLine($"crisp demo: the kernel lacks {f.Name} ({f.Detail}); see `crisp check`");
            return CrispCommand.ExitFailed;
        }
        string python = new[] { "/usr/bin/python3", "/bin/python3", "/usr/local/bin/python3" }.FirstOrDefault(File.Exists)
            ?? throw new CrispException("crisp demo needs python3 for its example process (apt-get install python3)");

        string dir = Directory.CreateTempSubdirectory("crisp-demo-").FullName;
        string log = Path.Combine(dir, "ticks.log"), script = Path.Combine(dir, "workload.py");
        File.WriteAllText(script, Workload);
        var started = new List<int>();                   // our children
        int workload = 0, restored = 0;
        try
        {
            // As in a container: the example is init (pid 1) of its own pid namespace, so its
            // restored copy is made in a new one and needs none of the pids the frozen source holds.
            string unshare = new[] { "/usr/bin/unshare", "/bin/unshare" }.FirstOrDefault(File.Exists)
                ?? throw new CrispException("crisp demo needs unshare (util-linux) to start its example in its own pid namespace");
            string setsid = new[] { "/usr/bin/setsid", "/bin/setsid" }.FirstOrDefault(File.Exists)
                ?? throw new CrispException("crisp demo needs setsid (util-linux)");
            Step($"Starting the example as pid 1 of its own pid namespace (unshare --pid --fork): python3 holding {mib} MiB of memory, ticking every 100 ms into {log}");
            int outer = StartOrphan([unshare, "--pid", "--fork", setsid, python, "-u", script, mib.ToString(), log], dir);
            started.Add(outer);
            WaitFor(() => (workload = OnlyChild(outer)) != 0, TimeSpan.FromSeconds(30), "the example's pid namespace");
            WaitFor(() => Lines(log).Count(l => l.StartsWith("tick ", StringComparison.Ordinal)) >= 5, TimeSpan.FromSeconds(60), "the example to start");
            foreach (var l in Lines(log).TakeLast(3)) Console.WriteLine($"    {l}");

            int port = FreePort();
            Step($"Starting the destination: crisp agent --listen 127.0.0.1:{port}");
            string agentOut = Path.Combine(dir, "agent.out");
            int agent = Spawn([.. Self(), "agent", "--listen", $"127.0.0.1:{port}", "-W", dir], agentOut);
            started.Add(agent);
            WaitFor(() => CanConnect(port), TimeSpan.FromSeconds(30), "the agent to listen");

            Step($"Migrating: crisp migrate {workload} --to 127.0.0.1:{port}");
            int before = Lines(log).Length;
            string statsFile = Path.Combine(dir, "migrate.json");
            int migrate = Spawn([.. Self(), "migrate", workload.ToString(), "--to", $"127.0.0.1:{port}", "--json"], statsFile, inheritStderr: true);
            int status = ProcessSpawner.Wait(migrate);
            if (!LibC.WIFEXITED(status) || LibC.WEXITSTATUS(status) != 0)
                throw new CrispException($"the migration failed; see {agentOut}");

            Step("The process runs on the other side, its memory arriving lazily:");
            WaitFor(() => Lines(log).Skip(before).Count(l => l.StartsWith("tick ", StringComparison.Ordinal)) >= 3, TimeSpan.FromSeconds(30), "ticks after the migration");
            var ticks = Lines(log).Where(l => l.StartsWith("tick ", StringComparison.Ordinal)).ToList();
            int seam = ticks.FindIndex(l => Lines(log).Skip(before).Contains(l));
            foreach (var l in ticks.Skip(Math.Max(0, seam - 2)).Take(5)) Console.WriteLine($"    {l}");

            restored = FindInNamespace(workload, script);
            Step($"Asking it to hash all its memory again (SIGUSR1 to pid 1 of its new pid namespace, {restored} seen from here):");
            int beforeVerify = Lines(log).Length;
            Errno.Check(LibC.kill(restored, LibC.SIGUSR1), "kill", $"{restored}, SIGUSR1");
            WaitFor(() => Lines(log).Skip(beforeVerify).Any(l => l.StartsWith("verify", StringComparison.Ordinal)), TimeSpan.FromSeconds(60), "the verification");
            string verify = Lines(log).Skip(beforeVerify).First(l => l.StartsWith("verify", StringComparison.Ordinal));
            Console.WriteLine($"    {verify}");

            Step("Figures:");
            string migrateOut = File.ReadAllText(statsFile);
            Console.WriteLine($"    {migrateOut.Split('\n')[0].Trim()}");
            var stats = System.Text.Json.Nodes.JsonNode.Parse(migrateOut[migrateOut.IndexOf('{')..]);
            var daemon = stats?["destination_daemon"];
            if (daemon is not null)
                Console.WriteLine($"    destination: {daemon["faults"]} faults, pages by fault {daemon["fault_pages"]}, by fault-around {daemon["fault_around_pages"]}, " +
                                  $"by prefetch {daemon["prefetch_pages"]}; fault latency p50 {daemon["fault_latency_p50_micros"]} µs, p99 {daemon["fault_latency_p99_micros"]} µs");
            Console.WriteLine($"    downtime {stats?["downtime_ms"]} ms (frozen → running on the destination), total {stats?["total_ms"]} ms, {stats?["bytes_moved"]} bytes moved");
            if (Environment.ProcessPath is { } self && Path.GetFileName(self) == "crisp" && AppContext.BaseDirectory.Contains("/bin/Debug/", StringComparison.Ordinal))
                Console.WriteLine("    (a Debug build: `dotnet publish src/Crisp.Cli -c Release -r linux-x64 -o out && sudo out/crisp demo` shows the Native AOT figures)");
            return verify.StartsWith("verify ok", StringComparison.Ordinal) ? CrispCommand.ExitOk : CrispCommand.ExitFailed;
        }
        finally
        {
            // The restored copy and the example (not our children: init reaps them; killing a
            // namespace's init ends the namespace), unshare and the agent (ours).
            // Each only while it is still what it was (a dead one's pid may be another's by now).
            if (restored != 0 && IsRestoredCopy(restored, workload, script)) LibC.kill(restored, LibC.SIGKILL);
            if (workload != 0 && started.Count > 0 && OnlyChild(started[0]) == workload) LibC.kill(workload, LibC.SIGKILL);
            foreach (int pid in started)
            {
                LibC.kill(pid, LibC.SIGKILL);
                try { ProcessSpawner.Wait(pid, LibC.__WALL); } catch (SyscallException) { }
            }
            try { Directory.Delete(dir, true); } catch (IOException) { }
        }
    }

    /// <summary>The only child of <paramref name="pid"/> (unshare's: the init of the namespace), 0 if none yet.</summary>
    private static int OnlyChild(int pid)
    {
        try
        {
            var c = File.ReadAllText($"/proc/{pid}/task/{pid}/children").Split(' ', StringSplitOptions.RemoveEmptyEntries);
            return c.Length == 1 ? int.Parse(c[0]) : 0;
        }
        catch (IOException) { return 0; }
    }

    /// <summary>The host pid of the restored copy: init of another pid namespace than the source's, running the script.</summary>
    private static int FindInNamespace(int source, string script)
    {
        foreach (var d in Directory.GetDirectories("/proc"))
            if (int.TryParse(Path.GetFileName(d), out int pid) && IsRestoredCopy(pid, source, script))
                return pid;
        throw new CrispException("cannot find the restored process (pid 1 of a new pid namespace)");
    }

    private static bool IsRestoredCopy(int pid, int source, string script)
    {
        try
        {
            var nspid = File.ReadAllLines($"/proc/{pid}/status").FirstOrDefault(l => l.StartsWith("NSpid:", StringComparison.Ordinal));
            var ids = nspid?.Split((char[])['\t', ' '], StringSplitOptions.RemoveEmptyEntries).Skip(1).ToArray();
            return pid != source && ids is { Length: >= 2 } && ids[^1] == "1" &&
                   File.ReadAllText($"/proc/{pid}/cmdline").Contains(script, StringComparison.Ordinal);
        }
        catch (IOException) { return false; }
    }

    private static void Step(string text) => Console.WriteLine($"\n==> {text}");

    /// <summary>How to run this same crisp again: the AOT binary itself, or `dotnet crisp.dll`.</summary>
    private static string[] Self()
    {
        string exe = Environment.ProcessPath ?? throw new CrispException("cannot find crisp's own executable");
        if (Path.GetFileName(exe) == "dotnet")
            return [exe, Path.Combine(AppContext.BaseDirectory, "crisp.dll")];
        return [exe];
    }

    /// <summary>
    /// Starts the example in its own session and not as our child, as a service would run: when
    /// the source is killed after the migration its parent (init) reaps it at once, and the
    /// restored copy can take its pid back.
    /// </summary>
    private static int StartOrphan(string[] argv, string dir)
    {
        string pidFile = Path.Combine(dir, "workload.pid");
        int sh = Spawn(["/bin/sh", "-c", "setsid \"$@\" </dev/null >/dev/null 2>&1 & echo $! > \"$CRISP_DEMO_PIDFILE\"", "sh", .. argv],
            Path.Combine(dir, "sh.out"), extraEnv: $"CRISP_DEMO_PIDFILE={pidFile}");
        int status = ProcessSpawner.Wait(sh);
        if (!LibC.WIFEXITED(status) || LibC.WEXITSTATUS(status) != 0 || !File.Exists(pidFile))
            throw new CrispException("could not start the example process");
        return int.Parse(File.ReadAllText(pidFile).Trim());
    }

    private static int Spawn(string[] argv, string stdout, bool inheritStderr = false, string? extraEnv = null)
    {
        return ProcessSpawner.Spawn(new SpawnOptions
        {
            Path = argv[0],
            Argv = argv,
            Envp = ["PATH=/usr/bin:/bin:/usr/sbin:/sbin", "HOME=/root", "LANG=C", "DOTNET_NOLOGO=1", "DOTNET_CLI_TELEMETRY_OPTOUT=1", .. (extraEnv is null ? Array.Empty<string>() : [extraEnv])],
            Stdin = StdioSource.DevNull(false),
            Stdout = StdioSource.FromFile(stdout, LibC.O_WRONLY | LibC.O_CREAT | LibC.O_TRUNC),
            Stderr = inheritStderr ? StdioSource.FromFd(2) : StdioSource.FromFile(stdout, LibC.O_WRONLY | LibC.O_CREAT | LibC.O_APPEND),
        });
    }

    private static string[] Lines(string path)
    {
        try { return File.ReadAllLines(path); }
        catch (FileNotFoundException) { return []; }
    }

    private static void WaitFor(Func<bool> cond, TimeSpan timeout, string what)
    {
        var sw = Stopwatch.StartNew();
        while (!cond())
        {
            if (sw.Elapsed > timeout) throw new CrispException($"timed out waiting for {what}");
            Thread.Sleep(20);
        }
    }

    private static int FreePort()
    {
        using var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        s.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return ((IPEndPoint)s.LocalEndPoint!).Port;
    }

    private static bool CanConnect(int port)
    {
        try
        {
            using var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            s.Connect(IPAddress.Loopback, port);
            return true;
        }
        catch (SocketException) { return false; }
    }
}
