using System.CommandLine;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using Crisp.Checkpoint.Restore;
using Crisp.Images;
using Crisp.LazyPages;
using Crisp.Native;
using Crisp.PageServer.Client;

namespace Crisp.Cli.Remote;

/// <summary>
/// <c>crisp agent --listen ADDR:PORT</c>: the destination of <c>crisp migrate</c>. For each
/// migration: receive the images into a temporary directory, start the lazy-pages daemon
/// (in-process) with pages from the source's lazy page server, restore with --lazy-pages,
/// report "running" with the new pid, and once every page is in, report completion. Serves
/// migrations (one at a time) until SIGTERM/SIGINT.
/// </summary>
public static class AgentCommand
{
    public const int DefaultPort = 7317;

    public static Command Create()
    {
        var listen = new Option<string>("--listen") { Description = "ADDR:PORT to listen on (default 127.0.0.1:7317; port 0 picks one)", DefaultValueFactory = _ => $"127.0.0.1:{DefaultPort}" };
        var workDir = new Option<string?>("--work-dir", "-W") { Description = "where per-migration image directories are made (default: the temp directory)" };
        var verbosity = new Option<int>("--verbosity", "-v") { Description = "log level 0-4", DefaultValueFactory = _ => 3, Arity = ArgumentArity.ZeroOrOne };
        var cmd = new Command("agent", "Receive live migrations (crisp migrate PID --to HOST:PORT)");
        foreach (var o in new Option[] { listen, workDir, verbosity }) cmd.Options.Add(o);
        cmd.SetAction(r => CrispCommand.Guard("agent", () =>
        {
            Log.Level = r.GetValue(verbosity);
            var ep = ParseEndPoint(r.GetValue(listen)!, DefaultPort);
            string baseDir = Path.GetFullPath(r.GetValue(workDir) ?? Path.GetTempPath());
            using var listener = new Socket(ep.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
            listener.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
            listener.Bind(ep);
            listener.Listen(16);
            using var stop = new CancellationTokenSource();
            using var term = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => { c.Cancel = true; stop.Cancel(); });
            using var intr = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => { c.Cancel = true; stop.Cancel(); });
            Console.Out.WriteLine($"agent: listening on {listener.LocalEndPoint}");
            Console.Out.Flush();
            while (!stop.IsCancellationRequested)
            {
                Socket client;
                try { client = listener.AcceptAsync(stop.Token).AsTask().GetAwaiter().GetResult(); }
                catch (OperationCanceledException) { break; }
                client.NoDelay = true;
                string from = SafeRemote(client);
                try { ServeMigration(client, baseDir); }
                catch (Exception e) { Log.E($"agent: migration from {from} failed: {e.Message}"); }
            }
            Log.I("agent: stopped");
            return CrispCommand.ExitOk;
        }));
        return cmd;
    }

    internal static IPEndPoint ParseEndPoint(string text, int defaultPort)
    {
        if (IPEndPoint.TryParse(text, out var ep) && (ep.Port != 0 || text.EndsWith(":0", StringComparison.Ordinal)))
            return ep;
        if (IPAddress.TryParse(text.Trim('[', ']'), out var ip)) return new IPEndPoint(ip, defaultPort);
        int colon = text.LastIndexOf(':');
        if (colon > 0 && int.TryParse(text.AsSpan(colon + 1), out int port))
            return Crisp.PageServer.PageServerAddress.Resolve(text[..colon], port);
        throw new CrispException($"'{text}' is not ADDR:PORT");
    }

    private static string SafeRemote(Socket s)
    {
        try { return s.RemoteEndPoint?.ToString() ?? "?"; } catch (ObjectDisposedException) { return "?"; }
    }

    private static unsafe void ServeMigration(Socket client, string baseDir)
    {
        using var wire = new MigrationWire(client);
        var remote = (IPEndPoint)client.RemoteEndPoint!;
        string dir = Path.Combine(baseDir, $"crisp-agent-{Environment.ProcessId}-{Guid.NewGuid():N}"[..40]);
        Directory.CreateDirectory(dir);
        Log.I($"agent: migration from {remote} into {dir}");
        try
        {
            int files = 0;
            IPEndPoint? pageServer = null;
            while (pageServer is null)
            {
                int type = wire.ReadType();
                switch (type)
                {
                    case MigrationWire.File: wire.ReceiveFile(dir); files++; break;
                    case MigrationWire.Start:
                        int port = wire.ReadU16();
                        string address = wire.ReadString();
                        pageServer = new IPEndPoint(address.Length == 0 ? remote.Address : IPAddress.Parse(address), port);
                        break;
                    case -1: throw new IOException("the source closed the connection before starting");
                    default: throw new IOException($"unexpected message type {type}");
                }
            }
            Log.I($"agent: {files} image files received; pages from {pageServer}");
            RunMigration(wire, dir, pageServer);
        }
        finally
        {
            try { Directory.Delete(dir, recursive: true); } catch (IOException) { }
        }
    }

    private static unsafe void RunMigration(MigrationWire wire, string dir, IPEndPoint pageServer)
    {
        var images = new ImageDir(dir);
        using var source = new RemotePageSource(pageServer);
        int* p = stackalloc int[2];
        Errno.Check(LibC.pipe2(p, LibC.O_CLOEXEC), "pipe2", "lazy-pages status");
        int statusRead = p[0];
        using var cancel = new CancellationTokenSource();
        LazyPagesDaemon? daemon = null;
        int rc = -1;
        Exception? daemonError = null;
        var daemonThread = new Thread(() =>
        {
            try
            {
                daemon = new LazyPagesDaemon(new LazyPagesOptions
                {
                    WorkDir = dir,
                    PageSource = source,
                    PlanFor = pid => LocalImages.Plan(images, pid),
                    StatusFd = p[1],
                    Log = s => Log.I(s),
                    Policy = new LazyPagesPolicy { KillOnFailure = true },
                });
                rc = daemon.Run(cancel.Token);
            }
            catch (Exception e) { daemonError = e; }
        }) { Name = "agent lazy-pages", IsBackground = true };
        daemonThread.Start();
        byte b;
        nint n;
        do n = LibC.read(statusRead, &b, 1);
        while (n < 0 && Errno.Last == Errno.EINTR);
        LibC.close(statusRead);
        if (n != 1)
        {
            daemonThread.Join();
            string why = $"the lazy-pages daemon did not start: {daemonError?.Message ?? "no status"}";
            wire.SendError(why);
            throw new CrispException(why);
        }

        RestoredProcess restored;
        var sw = Stopwatch.StartNew();
        try
        {
            restored = Restorer.Restore(new RestoreOptions { ImagesDir = dir, WorkDir = dir, Detached = true, Lazy = true });
        }
        catch (Exception e)
        {
            cancel.Cancel();
            daemonThread.Join(TimeSpan.FromSeconds(10));
            wire.SendError($"restore failed: {e.Message}");
            throw;
        }
        Log.I($"agent: restored {restored.Pid} in {sw.Elapsed.TotalMilliseconds:F1} ms");
        wire.SendRunning(restored.Pid, restored.Elapsed);
        // The restored root is our child: reap it whenever it exits.
        new Thread(() =>
        {
            try
            {
                int code = restored.WaitForExit();
                Log.I($"agent: migrated process {restored.Pid} exited ({code})");
            }
            catch (SyscallException) { }
        }) { IsBackground = true, Name = $"reap {restored.Pid}" }.Start();

        daemonThread.Join();
        string stats = daemon?.Stats.ToJson() ?? "{}";
        if (daemon is not null)
            foreach (var f in daemon.Failures) Log.E($"agent: {f}");
        daemon?.Dispose();
        wire.SendComplete(daemonError is null ? rc : -1, stats);
        Log.I($"agent: migration of {restored.Pid} complete (daemon rc {rc})");
    }
}
