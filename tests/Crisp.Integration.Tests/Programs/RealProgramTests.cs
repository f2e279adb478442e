using Crisp.TestSupport;
using System.Buffers.Binary;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Crisp.Checkpoint.Dump;
using Crisp.Checkpoint.Restore;
using Crisp.Integration.Tests.Lazy;
using Crisp.Integration.Tests.Support;
using Crisp.Native;
using Xunit;
using Xunit.Abstractions;
using static Crisp.TestSupport.TestProcesses;

namespace Crisp.Integration.Tests.Programs;

/// <summary>
/// Programs people run, dumped and restored eagerly and lazily, judged by their own behaviour
/// afterwards: redis keeps its keys and serves new clients, python's http.server answers, an
/// asyncio loop on a socketpair with timers keeps its sequence, a .NET console app with the
/// runtime's defaults (W^X through /memfd:doublemapper, the diagnostics IPC socket) keeps its
/// state and its diagnostics socket answers the ProcessInfo command; a node http server keeps its
/// timers, its thread pool and its memory; nginx's master and workers serve and reload;
/// PostgreSQL in its own IPC namespace keeps its rows and serves new connections.
/// </summary>
public sealed class RealProgramTests(ITestOutputHelper output) : LiveProcessTest("programs")
{
    private readonly List<LazyDaemon> _daemons = [];

    protected override void AfterKill()
    {
        foreach (var d in _daemons) d.Dispose();
    }

    /// <summary>Dumps (the tree is killed), then restores eagerly or through a lazy-pages daemon.</summary>
    private unsafe Action DumpAndRestore(int pid, bool lazy)
    {
        string images = Path.Combine(Dir, "img");
        Dumper.Dump(new DumpOptions { Pid = pid, ImagesDir = images });
        int st;
        LibC.waitpid(pid, &st, 0);
        Assert.False(Alive(pid));
        LazyDaemon? daemon = null;
        if (lazy) { daemon = new LazyDaemon(images, Dir); _daemons.Add(daemon); }
        var r = Restorer.Restore(new RestoreOptions { ImagesDir = images, Detached = true, Lazy = lazy });
        Assert.Equal(pid, r.Pid);
        // Called once the program was judged: every page delivered, nothing poisoned.
        return () =>
        {
            if (daemon == null) return;
            int rc = daemon.WaitExit();
            output.WriteLine(daemon.Stderr);
            Assert.True(rc == 0, $"lazy-pages exit {rc}: {daemon.Stderr}");
            Assert.True(daemon.Stat("fault_pages") > 0, "no page arrived by fault: the restore was not lazy");
            Assert.Equal(0, daemon.Stat("poisoned_pages"));
        };
    }

    private static int SpawnIn(string log, string[] env, params string[] argv) => ProcessSpawner.Spawn(new SpawnOptions
    {
        Path = argv[0], Argv = argv, Envp = env,
        Stdin = StdioSource.DevNull(false),
        Stdout = StdioSource.FromFile(log, LibC.O_WRONLY | LibC.O_CREAT | LibC.O_APPEND),
        Stderr = StdioSource.FromFile(log, LibC.O_WRONLY | LibC.O_CREAT | LibC.O_APPEND),
        NewSession = true,
    });

    // ---- redis-server ----

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Redis_keeps_its_keys_and_serves_new_clients(bool lazy)
    {
        string log = Path.Combine(Dir, "redis.log");
        int pid = -1, port = 0;
        // The port is the kernel's pick released at once: another program may take it first; then try another.
        for (int attempt = 0; attempt < 3 && pid < 0; attempt++)
        {
            port = LoopbackPort.OutsideEphemeral();
            int p = Track(SpawnLogged(log, "/usr/bin/redis-server", "--port", port.ToString(), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", Dir));
            if (WaitForRedis(port, p)) pid = p;
            else if (Alive(p)) KillAndReap(p);
        }
        Assert.True(pid > 0, $"redis-server did not start: {string.Join(" | ", Lines(log).TakeLast(5))}");
        using (var c = new Resp(port))
        {
            Assert.Equal("+OK", c.Call("SET", "before", "kept across the dump"));
            for (int i = 0; i < 1000; i++) c.Call("RPUSH", "list", $"item{i}");
        }
        // The client is gone; redis closes its end when its event loop sees the FIN. Until then the
        // server holds a CLOSE_WAIT connection, which a dump without --tcp-established refuses.
        Assert.True(Poll.Until(() => !ServerConnections(port).Any(), 20_000), $"redis still holds connections on port {port}: {string.Join(", ", ServerConnections(port))}");
        var finish = DumpAndRestore(pid, lazy);

        using (var c = new Resp(port))
        {
            Assert.Equal("$20", c.Call("GET", "before"));
            Assert.Equal("kept across the dump", c.ReadLine());
            Assert.Equal(":1000", c.Call("LLEN", "list"));
            Assert.Equal("+OK", c.Call("SET", "after", "new"));
        }
        using (var c = new Resp(port))
        {
            Assert.Equal("$3", c.Call("GET", "after"));
            Assert.Equal("new", c.ReadLine());
        }
        finish();
        Assert.True(Alive(pid));
    }

    /// <summary>
    /// The process's fds that are sockets but neither unix, netlink nor listening TCP: its TCP
    /// connections, closed ones still held too (unhashed, /proc/net/tcp no longer lists them).
    /// </summary>
    private static List<int> ConnectionFds(int pid)
    {
        var known = new HashSet<string>();
        foreach (var (file, inodeColumn) in new[] { ("unix", 6), ("netlink", 9) })
            foreach (var l in File.ReadAllLines($"/proc/{pid}/net/{file}").Skip(1))
                if (l.Split(' ', StringSplitOptions.RemoveEmptyEntries) is var f && f.Length > inodeColumn) known.Add(f[inodeColumn]);
        foreach (var file in new[] { "tcp", "tcp6" })
            foreach (var l in File.ReadAllLines($"/proc/{pid}/net/{file}").Skip(1))
                if (l.Split(' ', StringSplitOptions.RemoveEmptyEntries) is var f && f.Length > 9 && f[3] == "0A") known.Add(f[9]);
        var fds = new List<int>();
        foreach (var fd in Directory.GetFiles($"/proc/{pid}/fd"))
        {
            string? target;
            try { target = new FileInfo(fd).LinkTarget; } catch (IOException) { continue; }
            if (target is not null && target.StartsWith("socket:[", StringComparison.Ordinal) && !known.Contains(target[8..^1]))
                fds.Add(int.Parse(Path.GetFileName(fd)));
        }
        return fds;
    }

    /// <summary>TCP sockets of this network namespace bound to local <paramref name="port"/> that are not listening (/proc/net/tcp states).</summary>
    private static IEnumerable<string> ServerConnections(int port) =>
        File.ReadAllLines("/proc/net/tcp").Skip(1)
            .Select(l => l.Split(' ', StringSplitOptions.RemoveEmptyEntries))
            .Where(f => f.Length > 3 && Convert.ToInt32(f[1].Split(':')[1], 16) == port && f[3] != "0A")
            .Select(f => $"{f[1]}→{f[2]} state {f[3]}");

    private static bool WaitForRedis(int port, int pid)
    {
        var sw = Stopwatch.StartNew();
        while (sw.Elapsed < TimeSpan.FromSeconds(20) && Alive(pid))
        {
            try
            {
                using var c = new Resp(port);
                if (c.Call("PING") == "+PONG") return true;
            }
            catch (SocketException) { }
            Thread.Sleep(20);
        }
        return false;
    }

    /// <summary>A minimal RESP client: commands as arrays of bulk strings, replies line by line.</summary>
    private sealed class Resp : IDisposable
    {
        private readonly Socket _s = new(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        private readonly StreamReader _in;
        private readonly NetworkStream _stream;

        public Resp(int port)
        {
            _s.ReceiveTimeout = 10_000;
            _s.Connect(IPAddress.Loopback, port);
            _stream = new NetworkStream(_s);
            _in = new StreamReader(_stream, Encoding.ASCII);
        }

        public string Call(params string[] args)
        {
            var sb = new StringBuilder($"*{args.Length}\r\n");
            foreach (var a in args) sb.Append($"${Encoding.UTF8.GetByteCount(a)}\r\n{a}\r\n");
            _stream.Write(Encoding.UTF8.GetBytes(sb.ToString()));
            return ReadLine();
        }

        public string ReadLine() => _in.ReadLine() ?? throw new IOException("redis closed the connection");

        public void Dispose() { _in.Dispose(); _s.Dispose(); }
    }

    // ---- python3 -m http.server ----

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Python_http_server_answers(bool lazy)
    {
        string log = Path.Combine(Dir, "http.log");
        string root = Path.Combine(Dir, "www");
        Directory.CreateDirectory(root);
        File.WriteAllText(Path.Combine(root, "hello.txt"), "served");
        int pid = Track(SpawnLogged(log, "/usr/bin/python3", "-u", "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory", root));
        string line = WaitForLine(log, l => l.StartsWith("Serving HTTP on 127.0.0.1 port "), timeoutMs: 30000);
        int port = int.Parse(line.Split(' ')[5]);
        Assert.Equal("served", Get(port, "/hello.txt"));
        var finish = DumpAndRestore(pid, lazy);

        Assert.Equal("served", Get(port, "/hello.txt"));
        File.WriteAllText(Path.Combine(root, "new.txt"), "written after the restore");
        Assert.Equal("written after the restore", Get(port, "/new.txt"));
        finish();
        Assert.True(Alive(pid));
    }

    private static string Get(int port, string path)
    {
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(10) };
        return http.GetStringAsync($"http://127.0.0.1:{port}{path}").GetAwaiter().GetResult();
    }

    // ---- python3 asyncio ----

    // A message goes round a socketpair through the loop's sock_sendall/sock_recv every 20 ms
    // (asyncio.sleep), and a call_later timer chain counts on its own; each tick prints both counters
    // and the message received, which must be the one sent in that round.
    private const string AsyncioScript = """
        import asyncio, socket
        async def main():
            a, b = socket.socketpair()
            a.setblocking(False); b.setblocking(False)
            loop = asyncio.get_running_loop()
            timer = [0]
            def tick():
                timer[0] += 1
                loop.call_later(0.01, tick)
            loop.call_later(0.01, tick)
            n = 0
            while True:
                n += 1
                await loop.sock_sendall(a, b'msg%d;' % n)
                got = (await loop.sock_recv(b, 100)).decode()
                print('tick', n, got, timer[0], flush=True)
                await asyncio.sleep(0.02)
        asyncio.run(main())
        """;

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Python_asyncio_loop_with_a_socketpair_and_timers_keeps_running(bool lazy)
    {
        string log = Path.Combine(Dir, "asyncio.log");
        int pid = Track(SpawnLogged(log, "/usr/bin/python3", "-u", "-c", AsyncioScript));
        WaitForLine(log, l => l.StartsWith("tick 20 "), timeoutMs: 30000);
        var finish = DumpAndRestore(pid, lazy);
        // Only lines the program finished writing: print's text and its newline are two writes.
        int before = CompleteLines(log).Length;
        var (lastN, lastTimer) = Parse(CompleteLines(log)[before - 1]);

        // Twenty more rounds after the restore, numbered on from where the dump left it.
        WaitForLine(log, l => l.StartsWith("tick "), skip: before + 20, timeoutMs: 30000);
        var after = CompleteLines(log).Skip(before).Where(l => l.StartsWith("tick ")).Select(Parse).ToList();
        Assert.Equal(Enumerable.Range(lastN + 1, after.Count), after.Select(a => a.N));
        Assert.True(after[^1].Timer > lastTimer, "the call_later timer chain stopped");
        Assert.All(CompleteLines(log).Where(l => l.StartsWith("tick ")), l => Assert.Equal($"msg{l.Split(' ')[1]};", l.Split(' ')[2]));
        finish();
    }

    private static string[] CompleteLines(string log)
    {
        string text = File.ReadAllText(log);
        return text[..(text.LastIndexOf('\n') + 1)].Split('\n', StringSplitOptions.RemoveEmptyEntries);
    }

    private static (int N, int Timer) Parse(string line)
    {
        var f = line.Split(' ');
        return (int.Parse(f[1]), int.Parse(f[3]));
    }

    // ---- nginx ----

    /// <summary>
    /// nginx as a service runs it: a master (root) and two workers that dropped to nobody, sharing
    /// the listening socket and talking to the master over socketpairs. After the restore the
    /// workers serve old and new files, are still nobody, and a SIGHUP makes the restored master
    /// re-read its configuration and fork new workers that serve too.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Nginx_master_and_workers_serve_and_reload(bool lazy)
    {
        string www = Path.Combine(Dir, "www"), log = Path.Combine(Dir, "nginx.log");
        Directory.CreateDirectory(www);
        File.WriteAllText(Path.Combine(www, "hello.txt"), "served");
        // The workers (nobody) must reach www through the test's own directory.
        File.SetUnixFileMode(Dir, File.GetUnixFileMode(Dir) | UnixFileMode.OtherExecute | UnixFileMode.OtherRead);
        int pid = -1, port = 0;
        for (int attempt = 0; attempt < 3 && pid < 0; attempt++)
        {
            port = LoopbackPort.OutsideEphemeral();
            string conf = Path.Combine(Dir, "nginx.conf");
            File.WriteAllText(conf, $$"""
                daemon off;
                master_process on;
                worker_processes 2;
                user nobody nogroup;
                pid {{Dir}}/nginx.pid;
                error_log {{Dir}}/error.log info;
                events { worker_connections 64; }
                http {
                  access_log {{Dir}}/access.log;
                  client_body_temp_path {{Dir}}/body; proxy_temp_path {{Dir}}/proxy; fastcgi_temp_path {{Dir}}/fcgi;
                  uwsgi_temp_path {{Dir}}/uwsgi; scgi_temp_path {{Dir}}/scgi;
                  server { listen 127.0.0.1:{{port}}; root {{www}}; }
                }
                """);
            int p = Track(SpawnLogged(log, "/usr/sbin/nginx", "-p", Dir, "-c", conf));
            if (Poll.Until(() => Workers(p).Length == 2 && TryGet(port, "/hello.txt") == "served" || !Alive(p), 20_000) && Alive(p)) pid = p;
            else if (Alive(p)) KillAndReap(p);
        }
        Assert.True(pid > 0, $"nginx did not start: {File.ReadAllText(log)}{ReadOrEmpty(Path.Combine(Dir, "error.log"))}");
        int[] workers = Workers(pid);
        foreach (var w in workers) Track(w);
        // A worker just forked is root until it drops to nobody; the test's request may still be
        // closing in a worker (a connection a dump without --tcp-established refuses).
        Assert.True(Poll.Until(() => workers.All(w => RealUid(w) == Uid("nobody") && ConnectionFds(w).Count == 0), 20_000),
            $"workers {string.Join(", ", workers.Select(w => $"{w}: uid {RealUid(w)}, connections {ConnectionFds(w).Count}"))}");
        var finish = DumpAndRestore(pid, lazy);

        Assert.Equal(workers, Workers(pid));
        Assert.All(workers, w => Assert.Equal(Uid("nobody"), RealUid(w)));
        for (int i = 0; i < 4; i++) Assert.Equal("served", Get(port, "/hello.txt"));
        File.WriteAllText(Path.Combine(www, "new.txt"), "written after the restore");
        Assert.Equal("written after the restore", Get(port, "/new.txt"));

        Errno.Check(LibC.kill(pid, LibC.SIGHUP), "kill", $"{pid}, SIGHUP");
        Assert.True(Poll.Until(() => Workers(pid) is var now && now.Length == 2 && !now.Intersect(workers).Any(), 20_000),
            $"the restored master did not replace its workers on SIGHUP: {string.Join(",", Workers(pid))}\n{ReadOrEmpty(Path.Combine(Dir, "error.log"))}");
        foreach (var w in Workers(pid)) Track(w);
        Assert.Equal("served", Get(port, "/hello.txt"));
        finish();
        Assert.True(Alive(pid));
    }

    private static int[] Workers(int master) =>
        ReadOrEmpty($"/proc/{master}/task/{master}/children").Split(' ', StringSplitOptions.RemoveEmptyEntries).Select(int.Parse).Order().ToArray();

    private static int RealUid(int pid) =>
        int.Parse(ReadOrEmpty($"/proc/{pid}/status").Split('\n').Single(l => l.StartsWith("Uid:", StringComparison.Ordinal)).Split('\t')[1]);

    private static int Uid(string user) =>
        int.Parse(File.ReadAllLines("/etc/passwd").Select(l => l.Split(':')).Single(f => f[0] == user)[2]);


    private static string? TryGet(int port, string path)
    {
        try { return Get(port, path); }
        catch (Exception e) when (e is HttpRequestException or TaskCanceledException) { return null; }
    }

    // ---- PostgreSQL ----

    /// <summary>
    /// A PostgreSQL server as a container holds it: the postmaster and its background workers
    /// (checkpointer, writer, WAL writer, autovacuum) in an IPC namespace of their own (System V
    /// shared memory, the buffer pool as shared anonymous memory, latches on pipes and epoll),
    /// running as the postgres user. After the restore the rows are all there, and new
    /// connections (backends forked by the restored postmaster) write and checkpoint.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Postgres_keeps_its_rows_and_serves_new_connections(bool lazy)
    {
        string bin = Directory.GetDirectories("/usr/lib/postgresql").Select(d => Path.Combine(d, "bin")).Where(d => File.Exists(Path.Combine(d, "postgres")))
            .OrderByDescending(d => d, StringComparer.Ordinal).FirstOrDefault() ?? throw new InvalidOperationException("no /usr/lib/postgresql/*/bin/postgres: apt-get install postgresql (.ci/run does)");
        string data = Path.Combine(Dir, "data"), log = Path.Combine(Dir, "postgres.log");
        File.SetUnixFileMode(Dir, File.GetUnixFileMode(Dir) | UnixFileMode.OtherExecute);
        Directory.CreateDirectory(data);
        Commands.Sh("/usr/bin/chown", "postgres:postgres", data);
        string[] asPostgres = ["/usr/bin/setpriv", "--reuid", "postgres", "--regid", "postgres", "--init-groups"];
        Commands.Sh([.. asPostgres, Path.Combine(bin, "initdb"), "-D", data, "-A", "trust", "-U", "postgres"]);
        int pid = -1, port = 0;
        for (int attempt = 0; attempt < 3 && pid < 0; attempt++)
        {
            port = LoopbackPort.OutsideEphemeral();
            // unshare execs setpriv, which execs postgres: the postmaster owns the new IPC namespace.
            int p = Track(SpawnLogged(log, ["/usr/bin/unshare", "--ipc", .. asPostgres, Path.Combine(bin, "postgres"), "-D", data, "-k", data,
                "-p", port.ToString(), "-c", "listen_addresses=127.0.0.1"]));
            if (Poll.Until(() => Sql(port, "select 1") == "1" || !Alive(p), 30_000) && Alive(p)) pid = p;
            else if (Alive(p)) KillAndReap(p);
        }
        Assert.True(pid > 0, $"postgres did not start: {ReadOrEmpty(log)}");
        foreach (var c in Workers(pid)) Track(c);
        Assert.Equal("CREATE TABLE\nINSERT 0 100000", Sql(port, "create table t(a int, b text); insert into t select i, md5(i::text) from generate_series(1, 100000) i"));
        string sum = Sql(port, "select count(*), sum(a), md5(string_agg(b, ',' order by a)) from t") ?? throw new InvalidOperationException("no answer to the checksum query");
        // psql has gone; its backend may still be on its way out (a CLOSE_WAIT connection, which a
        // dump without --tcp-established refuses). Dump once only the server's own processes are left.
        Assert.True(Poll.Until(() => !ServerConnections(port).Any() && !Workers(pid).Any(c => ReadOrEmpty($"/proc/{c}/cmdline").Contains("127.0.0.1(")), 20_000),
            $"postgres still has a client backend: {string.Join(", ", ServerConnections(port))}");
        var finish = DumpAndRestore(pid, lazy);

        Assert.Equal(sum, Sql(port, "select count(*), sum(a), md5(string_agg(b, ',' order by a)) from t"));
        Assert.Equal("INSERT 0 1000", Sql(port, "insert into t select i, 'after' from generate_series(100001, 101000) i"));
        Assert.Equal("CHECKPOINT", Sql(port, "checkpoint"));
        Assert.Equal("101000|1000", Sql(port, "select count(*), count(*) filter (where b = 'after') from t"));
        finish();
        Assert.True(Alive(pid));
    }

    /// <summary>psql's unaligned, tuples-only output of <paramref name="sql"/>; null if the server does not answer.</summary>
    private static string? Sql(int port, string sql)
    {
        var (code, output) = Commands.Run("/usr/bin/psql", "-h", "127.0.0.1", "-p", port.ToString(), "-U", "postgres", "-tA", "-c", sql);
        return code == 0 ? output.Trim() : null;
    }

    // ---- node ----

    // An http server on libuv: a 10 ms interval timer, an fs.readFile per tick (libuv's thread
    // pool), and 64 MiB of random bytes whose sha256 each request recomputes against the one taken
    // at start. A request answers "ticks=N reads=R ok=true|false".
    private const string NodeScript = """
        const http = require('http'), fs = require('fs'), crypto = require('crypto');
        let ticks = 0, reads = 0;
        setInterval(() => { ticks++; fs.readFile(__filename, () => { reads++; }); }, 10);
        const big = crypto.randomBytes(64 << 20);
        const sum = crypto.createHash('sha256').update(big).digest('hex');
        const s = http.createServer((req, res) => {
          const ok = crypto.createHash('sha256').update(big).digest('hex') === sum;
          res.end(`ticks=${ticks} reads=${reads} ok=${ok}`);
        });
        s.listen(0, '127.0.0.1', () => console.log('listening ' + s.address().port));
        """;

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Node_http_server_keeps_its_timers_thread_pool_and_memory(bool lazy)
    {
        string log = Path.Combine(Dir, "node.log"), script = Path.Combine(Dir, "server.js");
        File.WriteAllText(script, NodeScript);
        int pid = Track(SpawnLogged(log, "/usr/bin/node", script));
        int port = int.Parse(WaitForLine(log, l => l.StartsWith("listening "), timeoutMs: 30000).Split(' ')[1]);
        (long Ticks, long Reads, string Ok) Ask()
        {
            var f = Get(port, "/").Split(' ').Select(kv => kv.Split('=')[1]).ToArray();
            return (long.Parse(f[0]), long.Parse(f[1]), f[2]);
        }
        var before = Ask();
        Assert.Equal("true", before.Ok);
        // The request's connection may still be closing on node's side (a dump without --tcp-established refuses it).
        Assert.True(Poll.Until(() => ConnectionFds(pid).Count == 0, 20_000), $"node still holds connections: fds {string.Join(", ", ConnectionFds(pid))}");
        var finish = DumpAndRestore(pid, lazy);

        var first = Ask();
        Assert.Equal("true", first.Ok);
        Assert.True(first.Ticks >= before.Ticks, $"ticks went back from {before.Ticks} to {first.Ticks}");
        // The timer and the thread pool's reads go on after the restore.
        Assert.True(Poll.Until(() => Ask() is var a && a.Ticks >= first.Ticks + 10 && a.Reads >= first.Reads + 10, 10_000),
            $"node's timer or thread pool stopped: {first} then {Ask()}");
        finish();
        Assert.True(Alive(pid));
    }

    // ---- a .NET 10 console app ----

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Dotnet_console_app_keeps_its_state_and_its_diagnostics_socket_answers(bool lazy)
    {
        string dll = DotnetApp.Dll;
        string log = Path.Combine(Dir, "app.log");
        string tmp = Path.Combine(Dir, "tmp");
        Directory.CreateDirectory(tmp);
        // The runtime's defaults: W^X and diagnostics on. TMPDIR keeps its IPC socket in the test's directory.
        int pid = Track(SpawnIn(log, ["PATH=/usr/bin:/bin", $"HOME={Dir}", $"TMPDIR={tmp}/", "DOTNET_CLI_TELEMETRY_OPTOUT=1"],
            "/usr/bin/dotnet", dll));
        string ready = WaitForLine(log, l => l.StartsWith("ready "), timeoutMs: 60000);
        string hash = ready.Split(' ')[2];
        WaitForLine(log, l => l.StartsWith("tick 8 "), timeoutMs: 30000);
        Assert.Contains(File.ReadLines($"/proc/{pid}/maps"), l => l.EndsWith("/memfd:doublemapper (deleted)"));
        string diag = Directory.GetFiles(tmp, $"dotnet-diagnostic-{pid}-*-socket").Single();
        Assert.Equal(pid, DiagnosticsProcessInfo(diag));

        var finish = DumpAndRestore(pid, lazy);
        int before = Lines(log).Length;
        long lastN = long.Parse(Lines(log).Last(l => l.StartsWith("tick ")).Split(' ')[1]);

        WaitForLine(log, l => l.StartsWith("tick "), skip: before + 5, timeoutMs: 30000);
        var after = Lines(log).Skip(before).Where(l => l.StartsWith("tick ")).Select(l => l.Split(' ')).ToList();
        Assert.Equal(lastN + 4, long.Parse(after[0][1]));
        Assert.All(after, f =>
        {
            long n = long.Parse(f[1]);
            Assert.Equal(n, long.Parse(f[2]));             // the list has one entry per tick
            Assert.Equal(n * (n + 1) / 2, long.Parse(f[3])); // holding 1..n
            Assert.Equal(hash, f[4]);                      // the 32 MiB array unchanged
        });
        Assert.Equal(pid, DiagnosticsProcessInfo(diag));
        Assert.Equal(pid, DiagnosticsProcessInfo(diag));
        finish();
        Assert.True(Alive(pid));
    }

    /// <summary>
    /// The diagnostics IPC protocol (what dotnet-counters and dotnet-trace speak): a 20-byte header
    /// "DOTNET_IPC_V1\0", u16 size, u8 command set, u8 command id, u16 reserved; ProcessInfo is set 4,
    /// id 0, answered by set 0xFF id 0 (OK) with the process id as the first u64 of the payload.
    /// </summary>
    private static int DiagnosticsProcessInfo(string path)
    {
        using var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified) { ReceiveTimeout = 10_000 };
        s.Connect(new UnixDomainSocketEndPoint(path));
        var req = new byte[20];
        "DOTNET_IPC_V1\0"u8.CopyTo(req);
        BinaryPrimitives.WriteUInt16LittleEndian(req.AsSpan(14), 20);
        req[16] = 4;
        s.Send(req);
        var buf = new List<byte>();
        var chunk = new byte[4096];
        int size = int.MaxValue;
        while (buf.Count < size)
        {
            int n = s.Receive(chunk);
            if (n == 0) throw new IOException($"the diagnostics socket closed after {buf.Count} bytes");
            buf.AddRange(chunk.AsSpan(0, n));
            if (buf.Count >= 20) size = BinaryPrimitives.ReadUInt16LittleEndian(buf.ToArray().AsSpan(14));
        }
        var r = buf.ToArray();
        Assert.Equal("DOTNET_IPC_V1\0"u8.ToArray(), r[..14]);
        Assert.Equal(0xFF, r[16]);
        Assert.Equal(0, r[17]);
        return checked((int)BinaryPrimitives.ReadUInt64LittleEndian(r.AsSpan(20)));
    }

    /// <summary>tests/workloads/dotnetapp built once per test run, outside the repository (its Directory.Build.props would apply inside).</summary>
    private static class DotnetApp
    {
        private static readonly Lazy<string> Out = new(BuildOnce);

        public static string Dll => Out.Value;

        private static string BuildOnce()
        {
            string dir = TempDir("dotnetapp");
            AppDomain.CurrentDomain.ProcessExit += (_, _) => { try { Directory.Delete(dir, true); } catch (IOException) { } };
            string src = Path.Combine(Repo.Workloads, "dotnetapp");
            foreach (var f in new[] { "Program.cs", "dotnetapp.csproj" })
                File.Copy(Path.Combine(src, f), Path.Combine(dir, f));
            var psi = new ProcessStartInfo("dotnet", ["build", "-c", "Release", "-o", Path.Combine(dir, "out"), Path.Combine(dir, "dotnetapp.csproj")])
            {
                RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = dir,
            };
            psi.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
            psi.Environment["DOTNET_NOLOGO"] = "1";
            using var p = Process.Start(psi)!;
            var stdout = p.StandardOutput.ReadToEndAsync();
            string err = p.StandardError.ReadToEnd();
            if (!p.WaitForExit(300_000)) { p.Kill(); throw new TimeoutException("dotnet build of tests/workloads/dotnetapp took over 5 minutes"); }
            if (p.ExitCode != 0) throw new InvalidOperationException($"dotnet build of the .NET workload failed: {stdout.Result}{err}");
            return Path.Combine(dir, "out", "dotnetapp.dll");
        }
    }
}
