using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Crisp.Checkpoint.Dump;
using Crisp.Native;

namespace Crisp.Migration;

/// <summary>
/// The source side of <c>crisp migrate PID --to HOST:PORT</c>: post-copy live migration to a
/// <see cref="MigrationAgent"/>. Freeze and dump everything but the lazy memory into a temporary
/// directory, serve that memory from the frozen tree on a lazy page server, send the images and a
/// "start" over one control connection (<see cref="MigrationWire"/>); the agent restores lazily
/// and says "running"; pages then move on demand and in the background; the source is killed once
/// all are delivered. Failure before any page moved resumes the source as it was
/// (<see cref="LazyDumpServer"/> decides).
/// </summary>
public static class MigrationSource
{
    /// <summary>
    /// The control connection to the agent, authenticated as the request says (TLS, the agent's
    /// token); the handshake is bounded by <paramref name="timeout"/>, the replies then come when they come.
    /// </summary>
    private static Crisp.PageServer.Transport.PageServerConnection ConnectAgent(MigrationRequest request, TimeSpan timeout)
    {
        try
        {
            var control = request.Transport.Connect(request.Agent, timeout, timeout);
            control.Socket.NoDelay = true;
            control.Socket.ReceiveTimeout = 0;
            control.Socket.SendTimeout = 0;
            return control;
        }
        catch (Crisp.PageServer.Transport.PeerRefusedException e)
        {
            throw new CrispException($"the agent at {request.Agent} failed authentication: {e.Message}");
        }
        catch (Exception e) when (e is SocketException or IOException)
        {
            throw new CrispException($"cannot reach the agent at {request.Agent}: {(e is SocketException se ? se.SocketErrorCode.ToString() : e.Message)}");
        }
    }

    public static MigrationResult Run(MigrationRequest request)
    {
        if (request.PreCopy) return RunPreCopy(request);
        int pid = request.Pid;
        var timeout = request.Timeout;
        var agent = request.Agent;
        var total = Stopwatch.StartNew();
        long startTicks = Stopwatch.GetTimestamp();
        var stats = new MigrationStats { SourcePid = pid, Destination = agent.ToString() };
        var control = ConnectAgent(request, timeout);
        using var wire = new MigrationWire(control);
        var local = ((IPEndPoint)control.Socket.LocalEndPoint!).Address;
        byte[] pageKey = Crisp.PageServer.Transport.PageServerTransport.NewAccessKey();
        string dir = Path.Combine(request.TempDir ?? Path.GetTempPath(), $"crisp-migrate-{pid}-{Guid.NewGuid():N}"[..40]);

        var replies = new AgentReplies(wire);
        var moved = new Crisp.Migration.Addresses.SourceAddresses(request.MoveAddresses, local);
        WarnIfLockStays(request, moved);
        long freezeTicks = 0;
        var server = new LazyDumpServer(new LazyDumpServerOptions
        {
            EndPoint = new IPEndPoint(local, 0),
            Transport = new Crisp.PageServer.Transport.PageServerTransport { Tls = request.Transport.Tls, AccessKey = pageKey },
            FirstPageTimeout = timeout,
            ReconnectTimeout = request.ReconnectTimeout,
            HandleSignals = request.HandleSignals,
            Listening = ep =>
            {
                // Images are complete (inventory last): ship them, then start the destination.
                var sent = Stopwatch.StartNew();
                foreach (var f in Directory.GetFiles(dir).Order(StringComparer.Ordinal))
                    wire.SendFile(Path.GetFileName(f), f);
                stats.ImageBytes = wire.BytesSent;
                foreach (var m in moved.Moved) wire.SendAddress(m.ToString());
                if (request.Advertise?.Invoke(ep) is { } told) wire.SendStart(told.Port, told.Address.ToString(), pageKey);
                else wire.SendStart(ep.Port, "", pageKey);
                Log.I($"migrate: {stats.ImageBytes} bytes of images sent in {sent.Elapsed.TotalMilliseconds:F1} ms; pages served on {ep}");
                replies.Start();
            },
            Progress = request.Progress is { } progress ? (done, all, bytes) => progress(done, all, bytes, total.Elapsed) : null,
        });
        replies.Server = server;

        try
        {
            freezeTicks = Stopwatch.GetTimestamp();
            var dumpTimer = Stopwatch.StartNew();
            var result = Dumper.Dump(new DumpOptions
            {
                Pid = pid, ImagesDir = dir, LazyPages = true,
                TcpEstablished = request.TcpEstablished, SkipInFlight = request.SkipInFlight, NetworkLock = request.NetworkLock, UnlockAfterKill = moved.Any,
                // The downtime starts when the tree is frozen, not before (the dump reads smaps first).
                Frozen = () => { freezeTicks = Stopwatch.GetTimestamp(); dumpTimer.Restart(); },
                ServeLazy = tree =>
                {
                    stats.DumpMs = dumpTimer.Elapsed.TotalMilliseconds;
                    moved.TakeAway();
                    LazyDumpEnd end;
                    try { end = server.Serve(tree, dir); }
                    catch
                    {
                        moved.GiveBack();
                        throw;
                    }
                    // Resumed here: the addresses come back before the tree runs (the agent deleted what it added).
                    if (end == LazyDumpEnd.Resume) moved.GiveBack();
                    // Every page read for the destination (or the transfer ended): what "total" measures.
                    stats.TotalMs = server.CompletedTicks != 0
                        ? Stopwatch.GetElapsedTime(startTicks, server.CompletedTicks).TotalMilliseconds
                        : total.Elapsed.TotalMilliseconds;
                    return end;
                },
            });
            stats.LazyPages = server.LazyPages;
            stats.PagesDelivered = server.PagesDelivered;
            stats.Outcome = server.Outcome;
            if (result.LazyEnd == LazyDumpEnd.Resume)
                return new MigrationResult(stats, Resumed: true);

            // Killed here; the destination has (or had) it.
            var running = replies.Running.Task;
            if (Succeeds(running, timeout))
            {
                stats.DestinationPid = running.Result.Pid;
                stats.RestoreMs = running.Result.Restore.TotalMilliseconds;
                stats.DowntimeMs = Stopwatch.GetElapsedTime(freezeTicks, running.Result.AtTicks).TotalMilliseconds;
            }
            if (stats.TotalMs == 0) stats.TotalMs = total.Elapsed.TotalMilliseconds;
            server.WaitAndStopAsync(LazyDump.InFlightGrace).GetAwaiter().GetResult();
            int? daemonRc = AwaitComplete(replies, stats, TimeSpan.FromSeconds(15));
            if (daemonRc is not (null or 0))
            {
                stats.Outcome += $"; the destination's lazy-pages daemon reported failure ({daemonRc})";
                server.MarkFailed();
            }
            stats.Succeeded = server.Succeeded && stats.DestinationPid != 0;
            stats.PageBytes = server.BytesSent;
            stats.BytesMoved = wire.BytesSent + server.BytesSent;
            return new MigrationResult(stats, Resumed: false);
        }
        finally
        {
            server.DisposeAsync().AsTask().GetAwaiter().GetResult();
            try { Directory.Delete(dir, recursive: true); } catch (IOException) { }
        }
    }

    /// <summary>
    /// <c>crisp migrate --pre-copy</c>: memory moves in rounds while the tree runs, then the rest
    /// with the tree frozen. Round 0 is a pre-dump (every page; the write tracking starts, see
    /// WriteTracking.cs); every later round is a pre-dump against the previous one, so it holds
    /// the pages written since. Each round's images go to the agent as an images dir of its own,
    /// linked to the previous one as its parent. The rounds end when one wrote few pages (at most
    /// 1/64 of the first, or 256), when one no longer shrinks to 3/4 of the one before (the writes
    /// outpace the copy), or after <see cref="MigrationRequest.MaxRounds"/>. Then the last round:
    /// a dump against the last pre-dump, frozen, that writes only what changed since; its images
    /// are sent and the agent restores eagerly (every page is there, most from the parents): with
    /// so few pages left an eager copy costs less downtime than setting up post-copy for them.
    /// The tree is killed once the agent says the copy runs; resumed if it reports a failure.
    /// </summary>
    public static MigrationResult RunPreCopy(MigrationRequest request)
    {
        int pid = request.Pid;
        var timeout = request.Timeout;
        var total = Stopwatch.StartNew();
        var stats = new MigrationStats { SourcePid = pid, Destination = request.Agent.ToString(), Mode = "pre-copy" };
        var control = ConnectAgent(request, timeout);
        using var wire = new MigrationWire(control);
        string dir = Path.Combine(request.TempDir ?? Path.GetTempPath(), $"crisp-migrate-{pid}-{Guid.NewGuid():N}"[..40]);
        Directory.CreateDirectory(dir);
        var replies = new AgentReplies(wire);
        var moved = new Crisp.Migration.Addresses.SourceAddresses(request.MoveAddresses, ((IPEndPoint)control.Socket.LocalEndPoint!).Address);
        WarnIfLockStays(request, moved);
        try
        {
            void Send(string name, string parent)
            {
                wire.SendDir(name, parent);
                foreach (var f in Directory.GetFiles(Path.Combine(dir, name)).Order(StringComparer.Ordinal))
                    if (Path.GetFileName(f) != Crisp.Images.Pages.PagemapReader.ParentLink)
                        wire.SendFile(Path.GetFileName(f), f);
            }
            string prev = "";
            for (int round = 0; round < Math.Max(1, request.MaxRounds); round++)
            {
                string name = $"pre{round}";
                var sw = Stopwatch.StartNew();
                var r = Dumper.PreDump(new DumpOptions
                {
                    Pid = pid, ImagesDir = Path.Combine(dir, name), LeaveRunning = true, TrackMem = true,
                    PrevImagesDir = prev.Length == 0 ? null : "../" + prev,
                });
                Send(name, prev);
                stats.PreCopyRoundPages.Add(r.PagesWritten);
                stats.PreCopyRounds.Add(new PreCopyRound
                {
                    Pages = r.PagesWritten, FrozenMs = r.Frozen.TotalMilliseconds, RoundMs = sw.Elapsed.TotalMilliseconds,
                    FreezeUnixNs = r.FreezeStartUnixNs, ResumedUnixNs = r.ResumedUnixNs,
                });
                Log.I($"migrate: pre-copy round {round}: {r.PagesWritten} pages sent in {sw.Elapsed.TotalMilliseconds:F1} ms (frozen {r.Frozen.TotalMilliseconds:F1} ms)");
                request.Progress?.Invoke((ulong)round, 0, wire.BytesSent, total.Elapsed);
                prev = name;
                var pages = stats.PreCopyRoundPages;
                if (round > 0 && (r.PagesWritten <= Math.Max(256, pages[0] / 64) || r.PagesWritten * 4 > pages[^2] * 3)) break;
            }

            long freezeTicks = 0;
            var result = Dumper.Dump(new DumpOptions
            {
                Pid = pid, ImagesDir = Path.Combine(dir, "final"), PrevImagesDir = "../" + prev, TrackMem = true,
                TcpEstablished = request.TcpEstablished, SkipInFlight = request.SkipInFlight, NetworkLock = request.NetworkLock, UnlockAfterKill = moved.Any,
                Frozen = () => freezeTicks = Stopwatch.GetTimestamp(),
                HoldFrozen = () =>
                {
                    moved.TakeAway();
                    try { Send("final", prev); }
                    catch
                    {
                        moved.GiveBack();
                        throw;
                    }
                    foreach (var m in moved.Moved) wire.SendAddress(m.ToString());
                    replies.Start();
                    wire.SendGo();
                    var running = replies.Running.Task;
                    try { running.Wait(timeout); }
                    catch (AggregateException e)
                    {
                        // The agent said its restore failed (it kills what it made): nothing runs there.
                        stats.Outcome = e.InnerException?.Message ?? e.Message;
                        moved.GiveBack();
                        return LazyDumpEnd.Resume;
                    }
                    if (!running.IsCompletedSuccessfully)
                    {
                        // No answer: the copy may run there; two must never run, so this one goes.
                        stats.Outcome = $"the agent did not say within {timeout.TotalSeconds:0.#} s whether the copy runs; the source was killed";
                        return LazyDumpEnd.Kill;
                    }
                    stats.DestinationPid = running.Result.Pid;
                    stats.RestoreMs = running.Result.Restore.TotalMilliseconds;
                    stats.DowntimeMs = Stopwatch.GetElapsedTime(freezeTicks, running.Result.AtTicks).TotalMilliseconds;
                    stats.RunningUnixNs = DumpResult.UnixNowNs() - (long)(Stopwatch.GetElapsedTime(running.Result.AtTicks).TotalMilliseconds * 1e6);
                    return LazyDumpEnd.Kill;
                },
            });
            stats.FinalPages = result.PagesWritten;
            stats.FinalFreezeUnixNs = result.FreezeStartUnixNs;
            stats.DumpMs = result.Total.TotalMilliseconds;
            stats.BytesMoved = wire.BytesSent;
            stats.PageBytes = (long)(stats.PreCopyRoundPages.Aggregate(0UL, (a, b) => a + b) + stats.FinalPages) * 4096;
            if (result.LazyEnd == LazyDumpEnd.Resume)
            {
                stats.TotalMs = total.Elapsed.TotalMilliseconds;
                return new MigrationResult(stats, Resumed: true);
            }
            // Killed here. The agent restored lazily from the rounds' images and says "complete"
            // once its daemon has pushed every page in: the end of the migration.
            bool daemonOk = true;
            if (stats.DestinationPid != 0)
            {
                int? daemonRc = AwaitComplete(replies, stats, timeout);
                daemonOk = daemonRc == 0;
                if (daemonRc is null) stats.Outcome = $"the agent did not report every page in within {timeout.TotalSeconds:0.#} s";
                else if (daemonRc != 0) stats.Outcome = $"the destination's lazy-pages daemon reported failure ({daemonRc})";
            }
            stats.TotalMs = total.Elapsed.TotalMilliseconds;
            stats.Succeeded = stats.DestinationPid != 0 && daemonOk;
            if (stats.Succeeded) stats.Outcome = $"{stats.PreCopyRoundPages.Count} pre-copy round(s), {stats.FinalPages} pages sent frozen";
            return new MigrationResult(stats, Resumed: false);
        }
        finally
        {
            try { Directory.Delete(dir, recursive: true); } catch (IOException) { }
        }
    }

    /// <summary>
    /// Connections whose address stays here: once the tree is killed the lock must stay (CRIU's
    /// rule), or this host would answer the peers' packets with a RST; moved, the lock goes with the tree.
    /// </summary>
    private static void WarnIfLockStays(MigrationRequest request, Crisp.Migration.Addresses.SourceAddresses moved)
    {
        if (request.TcpEstablished && !moved.Any && request.NetworkLock != Crisp.Checkpoint.Sockets.NetworkLockMethod.Skip)
            Log.W("migrate: --tcp-established without --move-address: the connections stay locked in this network namespace after the migration " +
                  "(nftables table inet CRIU-<run id>, or the iptables rules) until their address is gone from here and the lock is removed");
    }

    /// <summary>Waits for <paramref name="task"/> up to <paramref name="timeout"/>; true if it completed successfully (a fault is an answer, not an exception).</summary>
    /// <summary>
    /// Waits for the agent's "complete" (its lazy-pages daemon is done) and keeps the daemon's
    /// statistics in <paramref name="stats"/>. Returns the daemon's exit code, or null without an answer in time.
    /// </summary>
    private static int? AwaitComplete(AgentReplies replies, MigrationStats stats, TimeSpan timeout)
    {
        var complete = replies.Complete.Task;
        if (!Succeeds(complete, timeout)) return null;
        try { stats.DestinationDaemon = System.Text.Json.Nodes.JsonNode.Parse(complete.Result.Stats); }
        catch (System.Text.Json.JsonException) { Log.W("migrate: the agent's daemon statistics were not JSON"); }
        return complete.Result.Rc;
    }

    private static bool Succeeds(Task task, TimeSpan timeout)
    {
        try { task.Wait(timeout); }
        catch (AggregateException) { }
        return task.IsCompletedSuccessfully;
    }
}
