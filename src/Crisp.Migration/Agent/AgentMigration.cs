using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Crisp.Checkpoint.Restore;
using Crisp.Images;
using Crisp.LazyPages;
using Crisp.Native;
using Crisp.PageServer.Client;
using Crisp.PageServer.Transport;

namespace Crisp.Migration;

/// <summary>
/// One migration on the agent: receive the images into a temporary directory, start the
/// lazy-pages daemon (in-process) with pages from the source's lazy page server, restore with
/// --lazy-pages, report "running" with the new pid, and once every page is in, report completion.
/// Until "start" every read from the source is bounded by the peer timeout, and what it sends by
/// <see cref="MigrationLimits"/>; nothing runs here before the images are complete.
/// </summary>
internal sealed class AgentMigration(PageServerConnection connection, string baseDir, TimeSpan peerTimeout, MigrationLimits limits, TlsCredentials? tls,
    TimeSpan reconnectTimeout, string? moveAddressDevice = null)
{
    private readonly Socket client = connection.Socket;
    private readonly Crisp.Migration.Addresses.AgentAddresses _addresses = new(moveAddressDevice);

    public void Serve(CancellationToken stop)
    {
        using var wire = new MigrationWire(connection);
        var remote = (IPEndPoint)client.RemoteEndPoint!;
        // Short: the lazy-pages socket lives below it, and a unix socket path holds 107 bytes.
        string dir = Path.Combine(baseDir, $"crisp-{Environment.ProcessId}-{Guid.NewGuid():N}"[..24]);
        Directory.CreateDirectory(dir);
        Log.I($"agent: migration from {remote} into {dir}");
        try
        {
            var (pageServer, key, finalDir) = Receive(wire, remote, dir, stop);
            if (finalDir != null) RunPreCopyFinal(wire, finalDir);
            // Pages come back over the same trust: our certificate, the source's checked against its address.
            else RunPostCopy(wire, dir, pageServer!, new PageServerTransport { Tls = tls, AccessKey = key! });
        }
        finally
        {
            try { Directory.Delete(dir, recursive: true); } catch (IOException) { }
        }
    }

    /// <summary>
    /// Image files until "start" (returns the source's page server) or, for a pre-copy migration,
    /// images dirs of its rounds ('D', each linked to the previous one as its parent) until "go"
    /// (returns the last images dir, restored lazily from the local images).
    /// </summary>
    private (IPEndPoint? PageServer, byte[]? AccessKey, string? FinalDir) Receive(MigrationWire wire, IPEndPoint remote, string dir, CancellationToken stop)
    {
        string into = dir;
        var rounds = new List<string>();
        client.ReceiveTimeout = (int)Math.Clamp(peerTimeout.TotalMilliseconds, 1, int.MaxValue);
        // A stop while receiving drops the migration: nothing runs here yet, the source resumes.
        using var onStop = stop.Register(() =>
        {
            try { client.Shutdown(SocketShutdown.Both); }
            catch (Exception e) when (e is SocketException or ObjectDisposedException) { }
        });
        int files = 0;
        long bytesLeft = limits.MaxTotalBytes;
        try
        {
            while (true)
            {
                int type = wire.ReadType();
                switch (type)
                {
                    case MigrationWire.File:
                        if (files == limits.MaxFiles)
                            throw new IOException($"refusing more than {limits.MaxFiles} image files");
                        bytesLeft -= wire.ReceiveFile(into, limits, bytesLeft).Length;
                        files++;
                        break;
                    case MigrationWire.Dir:
                        string name = wire.ReadString(limits.MaxNameLength), parent = wire.ReadString(limits.MaxNameLength);
                        if (!MigrationLimits.IsImageName(name) || rounds.Contains(name))
                            throw new IOException($"refusing images dir '{name}'");
                        // Only a dir sent before may be the parent: the chain cannot leave this migration's directory.
                        if (parent.Length > 0 && !rounds.Contains(parent))
                            throw new IOException($"refusing parent '{parent}' of '{name}': no such images dir was sent");
                        if (files++ == limits.MaxFiles) throw new IOException($"refusing more than {limits.MaxFiles} image files");
                        into = Path.Combine(dir, name);
                        Directory.CreateDirectory(into);
                        if (parent.Length > 0) File.CreateSymbolicLink(Path.Combine(into, Crisp.Images.Pages.PagemapReader.ParentLink), "../" + parent);
                        rounds.Add(name);
                        break;
                    case MigrationWire.Address:
                        string text = wire.ReadString(limits.MaxNameLength);
                        try { _addresses.Want(text); }
                        catch (IOException e)
                        {
                            wire.SendError(e.Message);
                            throw;
                        }
                        break;
                    case MigrationWire.Go:
                        if (rounds.Count == 0) throw new IOException("'go' before any images dir");
                        Log.I($"agent: {files} image files in {rounds.Count} images dir(s) received; restoring eagerly");
                        client.ReceiveTimeout = 0;
                        return (null, null, into);
                    case MigrationWire.Start:
                        int port = wire.ReadU16();
                        string address = wire.ReadString(limits.MaxNameLength);
                        string key = wire.ReadString(128);
                        var pageServer = new IPEndPoint(address.Length == 0 ? remote.Address : IPAddress.Parse(address), port);
                        Log.I($"agent: {files} image files received; pages from {pageServer}");
                        client.ReceiveTimeout = 0;
                        try { return (pageServer, Convert.FromHexString(key), null); }
                        catch (FormatException) { throw new IOException("the access key of the start message is not hex"); }
                    case -1:
                        throw new IOException(stop.IsCancellationRequested
                            ? "the agent is stopping; the migration was dropped before it started"
                            : "the source closed the connection before starting");
                    default: throw new IOException($"unexpected message type {type}");
                }
            }
        }
        catch (IOException e) when (e.InnerException is SocketException { SocketErrorCode: SocketError.TimedOut or SocketError.WouldBlock })
        {
            throw new IOException($"the source sent nothing for {peerTimeout.TotalSeconds:0.#} s ({files} image files received); dropped", e);
        }
    }

    /// <summary>
    /// Post-copy: a lazy restore whose pages come from the source's lazy dump; a broken connection
    /// is re-established (the source keeps its tree frozen).
    /// </summary>
    private void RunPostCopy(MigrationWire wire, string dir, IPEndPoint pageServer, PageServerTransport transport) =>
        Run(wire, dir, "post-copy", cancel => RemotePages.Open(pageServer, dir, reconnectTimeout, Logger.Crisp.Prefixed("agent: "), cancel,
            new RemotePageSourceOptions { Transport = transport }));

    /// <summary>
    /// The last round of a pre-copy migration: every page is here already, in the images of the
    /// rounds (the final dir's parents hold most of them). The process is restored lazily from
    /// them, so it runs as soon as its non-memory state is back (the downtime does not grow with
    /// its memory), and the daemon pushes the pages in from the local images.
    /// </summary>
    private void RunPreCopyFinal(MigrationWire wire, string dir) =>
        Run(wire, dir, "pre-copy, lazy from the rounds' images", _ => new ImagePageSource(new ImageDir(dir)));

    private unsafe void Run(MigrationWire wire, string dir, string mode, Func<CancellationToken, IPageSource> openSource)
    {
        var images = new ImageDir(dir);
        using var cancel = new CancellationTokenSource();
        using var source = openSource(cancel.Token);
        int* p = stackalloc int[2];
        Errno.Check(LibC.pipe2(p, LibC.O_CLOEXEC), "pipe2", "lazy-pages status");
        int statusRead = p[0];
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
                    Policy = new LazyPagesPolicy { KillOnFailure = true },
                });
                rc = daemon.Run(cancel.Token);
            }
            catch (Exception e) { daemonError = e; }
        }) { Name = "agent lazy-pages", IsBackground = true };
        daemonThread.Start();
        if (!StatusFd.Await(statusRead))
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
            _addresses.Add();
            restored = Restorer.Restore(new RestoreOptions { ImagesDir = dir, WorkDir = dir, Detached = true, Lazy = true, TcpEstablished = true });
        }
        catch (Exception e)
        {
            cancel.Cancel();
            daemonThread.Join(TimeSpan.FromSeconds(10));
            _addresses.Remove();
            wire.SendError($"restore failed: {e.Message}");
            throw;
        }
        _addresses.Announce();
        Log.I($"agent: restored {restored.Pid} in {sw.Elapsed.TotalMilliseconds:F1} ms ({mode})");
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
