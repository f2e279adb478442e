#!/usr/bin/env python3
"""crisp benchmark harness: measures every figure of DESIGN.md's performance table.

    sudo python3 bench/bench.py                 # all scenarios, 64/256/1024 MiB, 5 runs each
    sudo python3 bench/bench.py --sizes 64 --runs 3 --scenarios dump,restore
    sudo python3 bench/bench.py --criu criu4    # CRIU side by side (default: criu4 on PATH, from ../shared/criu/build.sh)

Workload: tests/workloads/memtouch.c: N MiB of private anonymous memory filled with a
pattern, a heartbeat line "tick N CLOCK_REALTIME_NS" every 10 ms appended to a log opened
O_APPEND, and on SIGUSR1 one byte read from every page (timed, "touch_ns") and the whole
checksum verified. Images go to tmpfs (/dev/shm). crisp is the Native AOT binary
(dotnet publish src/Crisp.Cli -c Release -r linux-x64 -o out). Results: docs/BENCHMARKS.md
(median, min and max of the runs), with the date, the machine and this command line.

Every run of every scenario runs each tool once, crisp and CRIU interleaved (which goes first
alternates from run to run), so both meet the same machine state; ratios are crisp/CRIU (below
1: crisp is faster). Every scenario verifies the workload's memory after the restore (its own
checksum of every buffer), and a migration's gap counts only if heartbeats resumed after the
freeze.
"""
import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCENARIOS = ["floor", "dump", "restore", "restore-huge", "lazy", "migrate", "migrate-tls", "migrate-pidns", "migrate-cmd", "migrate-precopy", "workset"]
CRISP_ONLY = ("migrate-cmd", "migrate-precopy", "floor", "restore-huge")


class BenchError(Exception):
    pass


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def now():
    return time.perf_counter()


class Workload:
    """One memtouch process, started in its own session like a service would be; with pidns,
    as init (pid 1) of its own pid namespace, like a container's first process."""

    def __init__(self, binary, mib, workdir, pidns=False, extra=()):
        self.log = os.path.join(workdir, "workload.log")
        prefix = ["unshare", "--pid", "--fork", "setsid"] if pidns else []
        self.proc = subprocess.Popen(prefix + [binary, str(mib), self.log] + list(extra), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True, cwd=workdir)
        self.pid = self.proc.pid
        if pidns:
            # unshare's child, pid 1 inside, has exec'ed memtouch: that is the tree to move.
            end = time.time() + 10
            while not children(self.proc.pid) and time.time() < end:
                time.sleep(0.005)
            if not children(self.proc.pid):
                raise BenchError("the pid-namespace workload did not start")
            self.pid = children(self.proc.pid)[0]
        self.wait_for(lambda lines: any(l.startswith("ready") for l in lines), 60, "workload ready")
        self.wait_for(lambda lines: sum(l.startswith("tick") for l in lines) >= 3, 10, "first ticks")

    def lines(self):
        try:
            with open(self.log) as f:
                return f.read().splitlines()
        except FileNotFoundError:
            return []

    def wait_for(self, pred, timeout, what):
        end = time.time() + timeout
        while time.time() < end:
            if pred(self.lines()):
                return
            time.sleep(0.01)
        raise BenchError(f"timed out waiting for {what} in {self.log}")

    def ticks(self):
        out = []
        for l in self.lines():
            p = l.split()
            if len(p) >= 3 and p[0] == "tick":
                out.append((int(p[1]), int(p[2])))
        return out

    def check(self, pid):
        """SIGUSR1 the (possibly restored) process; returns touch_ns of its first full read."""
        before = sum(l.startswith("check") for l in self.lines())
        os.kill(pid, signal.SIGUSR1)
        self.wait_for(lambda ls: sum(l.startswith("check") for l in ls) > before, 120, "checksum line")
        line = [l for l in self.lines() if l.startswith("check")][-1]
        if not line.startswith("check ok"):
            raise BenchError(f"memory check failed after restore: {line}")
        return int(line.split("touch_ns=")[1].split()[0])


def kill_pid(pid):
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def read_pidfile(path, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        try:
            with open(path) as f:
                s = f.read().strip()
            if s:
                return int(s)
        except FileNotFoundError:
            pass
        time.sleep(0.005)
    raise BenchError(f"no pid in {path}")


def start_with_status_fd(cmd, fifo_dir, name, log):
    """Starts a daemon the way CRIU's docs do (`cmd --status-fd 3 3>FIFO &`) and waits for
    the byte it writes to the FIFO once it is ready."""
    fifo = os.path.join(fifo_dir, name + ".fifo")
    os.mkfifo(fifo)
    rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    proc = subprocess.Popen(["sh", "-c", 'exec "$@" --status-fd 3 3>"$STATUS_FIFO"', "sh"] + cmd,
                            env=dict(os.environ, STATUS_FIFO=fifo), stdin=subprocess.DEVNULL,
                            stdout=log, stderr=subprocess.STDOUT)
    end = time.time() + 30
    try:
        while time.time() < end:
            try:
                if os.read(rfd, 1):
                    return proc
            except BlockingIOError:
                pass
            if proc.poll() is not None:
                raise BenchError(f"{' '.join(cmd)} exited with {proc.returncode} before it was ready")
            time.sleep(0.002)
        raise BenchError(f"{' '.join(cmd)} never became ready")
    finally:
        os.close(rfd)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def resumed_gap(w, t_freeze_ns, timeout=10):
    """The largest interval between heartbeats around the freeze, once a heartbeat written after
    the freeze shows the process runs again (a process that never resumed has no gap: it fails)."""
    end = time.time() + timeout
    while time.time() < end:
        ticks = w.ticks()
        after = [t for t in ticks if t[1] > t_freeze_ns]
        if len(after) >= 3:
            return max((b[1] - a[1]) for a, b in zip(ticks, ticks[1:])) / 1e9
        time.sleep(0.01)
    raise BenchError("the migrated process wrote no heartbeat after the freeze")


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except FileNotFoundError:
        return []


def outer_pid(ns_root_parent, inner_pid):
    """The pid, as we see it, of the process that is `inner_pid` in the pid namespace made by
    `unshare --fork` (pid ns_root_parent): found by NSpid in /proc."""
    todo = [ns_root_parent]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                for l in f:
                    if l.startswith("NSpid:"):
                        ids = [int(x) for x in l.split()[1:]]
                        if len(ids) > 1 and ids[-1] == inner_pid:
                            return p
        except FileNotFoundError:
            pass
        todo += children(p)
    raise BenchError(f"no process is pid {inner_pid} under {ns_root_parent}")


def find_restored(ns_root_parent, comm="memtouch"):
    """The workload restored under the agent: the process named comm (memtouch, dirtier) in its namespace."""
    todo = [ns_root_parent]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/comm") as f:
                if f.read().strip() == comm[:15]:
                    return p
        except FileNotFoundError:
            pass
        todo += children(p)
    raise BenchError(f"no restored {comm} under {ns_root_parent}")


def compiled(bindir, source, *flags):
    """The binary of a C program of the repository (source relative to ROOT) in bindir, built
    the first time it is asked for."""
    binary = os.path.join(bindir, os.path.splitext(os.path.basename(source))[0])
    if not os.path.exists(binary):
        sh(["gcc", "-O2", *flags, "-o", binary, os.path.join(ROOT, source)])
    return binary


def scenario_floor(mib, tmp, bindir):
    """The machine's own floor, no checkpoint tool involved (bench/firsttouch.c): how fast
    UFFDIO_COPY fills SIZE MiB in large chunks, and what a first read of every page costs when
    the process wrote the pages itself and when UFFDIO_COPY put them there."""
    probe = compiled(bindir, "bench/firsttouch.c")
    f = os.path.join(tmp, "file")
    with open(f, "wb") as out:
        out.truncate(1 << 20)
    text = subprocess.run([probe, str(mib), f], capture_output=True, text=True, check=True, timeout=600).stdout
    r = {}
    for line in text.splitlines():
        if line.startswith("UFFDIO_COPY fill:"):
            r["uffd_copy_fill_s"] = float(line.split()[2])
        elif line.startswith("UFFDIO_COPY:"):
            r["uffd_copied_read_s"] = float(line.split()[2])
        elif line.startswith("self-written:"):
            r["self_written_read_s"] = float(line.split()[2])
        elif line.startswith("memfd 2nd mapping:"):
            r["remap_read_s"] = float(line.split()[4])
        elif line.startswith("pread, THP:"):
            r["thp_pread_read_s"] = float(line.split()[3])
        elif line.startswith("  fill: pread into a MADV_HUGEPAGE range"):
            r["thp_pread_fill_s"] = float(line.split()[-4])
        elif line.startswith("  fill: pread into 4 KiB pages"):
            r["pread_fill_s"] = float(line.split()[-4])
        elif line.startswith("pread, 4 KiB:"):
            r["pread_read_s"] = float(line.split()[4])
        elif line.startswith("  MADV_COLLAPSE of it: ok"):
            r["collapse_s"] = float(line.split()[4])
    if not {"uffd_copy_fill_s", "uffd_copied_read_s", "self_written_read_s"} <= r.keys():
        raise BenchError(f"firsttouch printed no figures: {text}")
    # The floor of a post-copy migration's "all pages moved" (bench/netcopy.c): the memory over
    # a loopback TCP connection, alone and feeding UFFDIO_COPY, sender and receiver in parallel.
    text = subprocess.run([compiled(bindir, "bench/netcopy.c"), str(mib)], capture_output=True, text=True, check=True, timeout=600).stdout
    for line in text.splitlines():
        if line.startswith("loopback TCP alone:"):
            r["tcp_alone_s"] = float(line.split()[3])
        elif line.startswith("loopback TCP into UFFDIO_COPY:"):
            r["tcp_uffd_copy_s"] = float(line.split()[4])
    if not {"tcp_alone_s", "tcp_uffd_copy_s"} <= r.keys():
        raise BenchError(f"netcopy printed no figures: {text}")
    # The floor of a dump (bench/dumpfloor.c): a process's SIZE MiB copied to a file on the same
    # tmpfs the images go to (the better of two ways), and the kill that frees it.
    text = subprocess.run([compiled(bindir, "bench/dumpfloor.c"), str(mib), tmp], capture_output=True, text=True, check=True, timeout=600).stdout
    copies = []
    for line in text.splitlines():
        if line.startswith("readv+write:") or line.startswith("readv into mapping:"):
            copies.append(float(line.split()[-2]))
        elif line.startswith("kill:"):
            r["dump_kill_s"] = float(line.split()[1])
    if len(copies) != 2 or "dump_kill_s" not in r:
        raise BenchError(f"dumpfloor printed no figures: {text}")
    r["dump_copy_s"] = min(copies)
    r["dump_floor_s"] = r["dump_copy_s"] + r["dump_kill_s"]
    return r


def run_dump(tool, workload, images):
    t0 = now()
    sh([tool, "dump", "-t", str(workload.pid), "-D", images, "-o", "dump.log", "-v2"])
    return now() - t0


def scenario_dump(tool, memtouch, mib, tmp):
    images = os.path.join(tmp, "img")
    os.makedirs(images)
    w = Workload(memtouch, mib, tmp)
    try:
        return {"dump_s": run_dump(tool, w, images)}
    finally:
        kill_pid(w.pid)
        w.proc.wait()


def scenario_restore(tool, memtouch, mib, tmp, huge=False):
    images = os.path.join(tmp, "img")
    os.makedirs(images)
    w = Workload(memtouch, mib, tmp)
    run_dump(tool, w, images)
    w.proc.wait()
    pidfile = os.path.join(tmp, "restored.pid")
    t0 = now()
    sh([tool, "restore", "-D", images, "-d", "-o", "restore.log", "-v2", "--pidfile", pidfile] + (["--huge-pages"] if huge else []))
    elapsed = now() - t0
    pid = read_pidfile(pidfile)
    try:
        touch = w.check(pid)
    finally:
        kill_pid(pid)
    p = "huge_" if huge else ""
    return {p + "restore_s": elapsed, p + "eager_touch_s": touch / 1e9, p + "eager_full_speed_s": elapsed + touch / 1e9}


def daemon_stats(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def scenario_lazy(tool, memtouch, mib, tmp, is_crisp):
    images = os.path.join(tmp, "img")
    os.makedirs(images)
    w = Workload(memtouch, mib, tmp)
    run_dump(tool, w, images)
    w.proc.wait()
    stats_path = os.path.join(tmp, "lazy-stats.json")
    log = open(os.path.join(tmp, "lazy-pages.out"), "w")
    cmd = [tool, "lazy-pages", "-D", images, "-o", "lazy-pages.log", "-v2"]
    if is_crisp:
        cmd += ["--json", stats_path]
    daemon = start_with_status_fd(cmd, tmp, "lazy", log)
    pidfile = os.path.join(tmp, "restored.pid")
    pid = None
    try:
        t0 = now()
        sh([tool, "restore", "-D", images, "--lazy-pages", "-d", "-o", "restore.log", "-v2", "--pidfile", pidfile])
        returned = now() - t0
        pid = read_pidfile(pidfile)
        touch = w.check(pid)
        daemon.wait(timeout=120)
        every_page = now() - t0
        if daemon.returncode != 0:
            raise BenchError(f"lazy-pages exited with {daemon.returncode}")
        st = daemon_stats(stats_path)
        r = {"lazy_restore_return_s": returned, "lazy_first_read_s": touch / 1e9,
             "lazy_full_speed_s": returned + touch / 1e9, "lazy_every_page_s": every_page}
        if "fault_latency_p50_micros" in st:
            r["fault_p50_us"] = st["fault_latency_p50_micros"]
            r["fault_p99_us"] = st["fault_latency_p99_micros"]
            r["faults"] = st.get("faults", 0)
            r["prefetch_pages"] = st.get("prefetch_pages", 0)
        return r
    finally:
        if pid:
            kill_pid(pid)
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        log.close()


def make_pki(where):
    """A CA and one leaf for 127.0.0.1 (openssl CLI), used by both ends of migrate-tls, as
    CRIU's docs set TLS up: --tls --tls-cacert CA --tls-cert CERT --tls-key KEY."""
    ca_key, ca, key, csr, cert = (os.path.join(where, n) for n in ("ca-key.pem", "ca.pem", "key.pem", "leaf.csr", "cert.pem"))
    q = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sh(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca, "-days", "2",
        "-subj", "/CN=crisp bench CA"], **q)
    sh(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"], **q)
    ext = os.path.join(where, "leaf.ext")
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n")
    sh(["openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert, "-days", "2",
        "-extfile", ext], **q)
    return ["--tls", "--tls-cacert", ca, "--tls-cert", cert, "--tls-key", key]


def scenario_migrate(tool, memtouch, mib, tmp, pidns=False, tls=None):
    """CRIU's post-copy shape over loopback: lazy dump serving pages, lazy-pages fetching them.
    On one host the frozen source keeps its pids. A plain workload's destination restore runs
    in a new pid namespace, as it would have one on another machine; with pidns the workload is
    init (pid 1) of its own pid namespace, like a container's first process, and the restore
    makes that namespace itself, with nothing around the destination. With tls (the options of
    make_pki) both connections' ends authenticate and every page is encrypted."""
    src = os.path.join(tmp, "src")
    dst = os.path.join(tmp, "dst")
    os.makedirs(src)
    w = Workload(memtouch, mib, tmp, pidns=pidns)
    port = free_port()
    out = open(os.path.join(tmp, "migrate.out"), "w")
    procs = []
    restored = None
    try:
        t0 = now()
        t_freeze_ns = time.clock_gettime_ns(time.CLOCK_REALTIME)
        dumper = start_with_status_fd([tool, "dump", "-t", str(w.pid), "-D", src, "--lazy-pages", "--port", str(port),
                                       "--address", "127.0.0.1", "-o", "dump.log", "-v2"] + (tls or []), tmp, "dump", out)
        procs.append(dumper)
        shutil.copytree(src, dst)
        daemon = start_with_status_fd([tool, "lazy-pages", "--page-server", "--address", "127.0.0.1", "--port", str(port),
                                       "-D", dst, "-o", "lazy-pages.log", "-v2"] + (tls or []), tmp, "lazy", out)
        procs.append(daemon)
        pidfile = os.path.join(tmp, "restored.pid")
        if pidns:
            sh([tool, "restore", "-D", dst, "--lazy-pages", "-d", "-o", "restore.log", "-v2", "--pidfile", pidfile],
               stdout=out, stderr=subprocess.STDOUT)
            restored = read_pidfile(pidfile, timeout=60)
        else:
            # Without -d: in its own pid namespace the restore command is the namespace's init.
            restore = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", "--kill-child", tool, "restore",
                                        "-D", dst, "--lazy-pages", "-o", "restore.log", "-v2", "--pidfile", pidfile],
                                       stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
            procs.append(restore)
            inner = read_pidfile(pidfile, timeout=60)
        daemon.wait(timeout=300)
        all_moved = now() - t0
        dumper.wait(timeout=60)
        if daemon.returncode != 0:
            raise BenchError(f"lazy-pages exited with {daemon.returncode}")
        gap = resumed_gap(w, t_freeze_ns)
        if not pidns:
            restored = outer_pid(restore.pid, inner)
        w.check(restored)
        key = "migrate_pidns" if pidns else "migrate_tls" if tls else "migrate"
        return {f"{key}_all_pages_s": all_moved, f"{key}_gap_s": gap}
    finally:
        kill_pid(w.pid)
        if restored:
            kill_pid(restored)
        if w.proc.poll() is None:
            w.proc.kill()
        w.proc.wait()
        for p in reversed(procs):
            if p.poll() is None:
                p.kill()
                p.wait()
        out.close()


def scenario_migrate_precopy(tool, dirtier, mib, tmp):
    """`crisp migrate` of a workload that rewrites 10% of its memory a second
    (tests/workloads/dirtier.c), post-copy and then `--pre-copy` (a fresh workload each), both
    to a `crisp agent` in its own pid namespace; memory verified after each (every page against
    its generation)."""
    out = {}
    for mode, flags in (("postcopy", []), ("precopy", ["--pre-copy"])):
        sub = os.path.join(tmp, mode)
        os.mkdir(sub)
        r = scenario_migrate_cmd(tool, dirtier, mib, sub, flags=flags, extra=["10"])
        out[f"{mode}_gap_s"] = r["migrate_cmd_gap_s"]
        out[f"{mode}_downtime_s"] = r["migrate_cmd_downtime_s"]
        out[f"{mode}_total_s"] = r["migrate_cmd_total_s"]
        out[f"{mode}_mib_moved"] = r["bytes_moved"] / (1 << 20)
        if mode == "precopy":
            out["precopy_rounds"] = len(r["stats"]["pre_copy_round_pages"])
            out["precopy_frozen_mib"] = r["stats"]["final_pages"] * 4096 / (1 << 20)
            rounds = r["stats"].get("pre_copy_rounds") or []
            if rounds:
                out["precopy_round_frozen_max_s"] = max(x["frozen_ms"] for x in rounds) / 1000
    return out


def scenario_migrate_cmd(tool, memtouch, mib, tmp, flags=(), extra=()):
    """crisp's one-command migration: `crisp migrate PID --to 127.0.0.1:PORT` to a
    `crisp agent` running in its own pid namespace (same host, so the pid stays free)."""
    w = Workload(memtouch, mib, tmp, extra=extra)
    agent = None
    try:
        agent = Agent(tool, tmp)
        port = agent.port
        t0 = now()
        t_freeze_ns = time.clock_gettime_ns(time.CLOCK_REALTIME)
        r = subprocess.run([tool, "migrate", str(w.pid), "--to", f"127.0.0.1:{port}", "--json"] + list(flags),
                           capture_output=True, text=True, timeout=300)
        elapsed = now() - t0
        if r.returncode != 0:
            raise BenchError(f"crisp migrate failed: {r.stderr.strip()}")
        stats = json.loads(r.stdout[r.stdout.index("{"):])
        gap = resumed_gap(w, t_freeze_ns)
        w.check(find_restored(agent.proc.pid, os.path.basename(memtouch)))
        result = {"migrate_cmd_gap_s": gap, "migrate_cmd_downtime_s": stats["downtime_ms"] / 1000,
                  "migrate_cmd_total_s": stats["total_ms"] / 1000, "migrate_cmd_wall_s": elapsed}
        if flags or extra:
            result["bytes_moved"] = stats["bytes_moved"]
            result["stats"] = stats
        return result
    finally:
        kill_pid(w.pid)
        if agent:
            agent.stop()


class Agent:
    """`crisp agent` on a free loopback port, in its own pid namespace (same host, so the pid
    stays free), once it accepts connections; its output in TMP/agent.out."""

    def __init__(self, tool, tmp):
        self.port = free_port()
        self.out = open(os.path.join(tmp, "agent.out"), "w")
        self.proc = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", "--kill-child", tool, "agent",
                                      "--listen", f"127.0.0.1:{self.port}", "-W", tmp], stdin=subprocess.DEVNULL,
                                     stdout=self.out, stderr=subprocess.STDOUT)
        end = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.time() > end or self.proc.poll() is not None:
                    self.stop()
                    raise BenchError("the agent did not start")
                time.sleep(0.01)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.out.close()


FIGURES = [
    ("floor", "uffd_copy_fill_s", "machine floor: UFFDIO_COPY of every page, 512 KiB chunks, no tool (s)", ""),
    ("floor", "self_written_read_s", "machine floor: first read of pages the process wrote itself (s)", ""),
    ("floor", "uffd_copied_read_s", "machine floor: first read of pages UFFDIO_COPY put in (s)", ""),
    ("floor", "remap_read_s", "machine floor: first read through a second mapping of page-cache pages just read (new 4 KiB translations only) (s)", ""),
    ("floor", "pread_fill_s", "machine floor: pread of every page into 4 KiB pages (s)", ""),
    ("floor", "pread_read_s", "machine floor: first read after that pread (s)", ""),
    ("floor", "thp_pread_fill_s", "machine floor: pread of every page into a MADV_HUGEPAGE range (s)", ""),
    ("floor", "thp_pread_read_s", "machine floor: first read after that pread (huge pages) (s)", ""),
    ("floor", "collapse_s", "machine floor: MADV_COLLAPSE of the UFFDIO_COPY-filled range (s)", ""),
    ("floor", "tcp_alone_s", "machine floor: every page over loopback TCP, 512 KiB writes, bytes dropped (s)", ""),
    ("floor", "dump_floor_s", "machine floor of a dump: the memory copied to a tmpfs file (better of process_vm_readv+write and process_vm_readv into the mapped file) + SIGKILL to reaped (s)", ""),
    ("floor", "dump_copy_s", "machine floor: the memory copied to a tmpfs file, no tool (s)", ""),
    ("floor", "dump_kill_s", "machine floor: SIGKILL of the process to reaped (s)", ""),
    ("floor", "tcp_uffd_copy_s", "machine floor: every page over loopback TCP into UFFDIO_COPY (all pages moved, no tool) (s)", ""),
    ("dump", "dump_s", "dump (s)", "≤ 0.5× CRIU"),
    ("restore", "eager_full_speed_s", "time to full speed, eager (restore + first full read) (s)", "≤ 0.5× CRIU"),
    ("restore", "restore_s", "eager restore returns (s)", ""),
    ("restore", "eager_touch_s", "first full read after eager restore (s)", ""),
    ("restore-huge", "huge_eager_full_speed_s", "time to full speed, eager restore --huge-pages (s)", ""),
    ("restore-huge", "huge_restore_s", "eager restore --huge-pages returns (s)", ""),
    ("restore-huge", "huge_eager_touch_s", "first full read after eager restore --huge-pages (s)", ""),
    ("lazy", "lazy_full_speed_s", "time to full speed, lazy (restore + first full read) (s)", "≤ 0.5× CRIU"),
    ("lazy", "lazy_every_page_s", "lazy restore: every page in, daemon exits (s)", "≤ 0.5× CRIU"),
    ("lazy", "lazy_restore_return_s", "lazy restore: restore command returns (s)", "≤ 0.5× CRIU, flat"),
    ("lazy", "lazy_first_read_s", "first full read after lazy restore (s)", ""),
    ("lazy", "fault_p50_us", "lazy fault latency p50 (µs)", ""),
    ("lazy", "fault_p99_us", "lazy fault latency p99 (µs)", ""),
    ("lazy", "faults", "faults served (count)", ""),
    ("lazy", "prefetch_pages", "pages pushed by prefetch (count)", ""),
    ("migrate", "migrate_gap_s", "application-visible gap, lazy migration in CRIU's shape (s)", "≤ 0.5× CRIU"),
    ("migrate", "migrate_all_pages_s", "lazy migration over loopback, all pages moved (s)", "≤ 0.5× CRIU"),
    ("migrate-tls", "migrate_tls_gap_s", "application-visible gap, lazy migration in CRIU's shape, --tls (s)", ""),
    ("migrate-tls", "migrate_tls_all_pages_s", "lazy migration over loopback, --tls, all pages moved (s)", ""),
    ("migrate-pidns", "migrate_pidns_gap_s", "application-visible gap, lazy migration of a pid-namespace init, CRIU's shape (s)", "≤ 0.5× CRIU"),
    ("migrate-pidns", "migrate_pidns_all_pages_s", "lazy migration of a pid-namespace init, all pages moved (s)", "≤ 0.5× CRIU"),
    ("migrate-cmd", "migrate_cmd_gap_s", "`crisp migrate`: application-visible gap (s)", "≤ 0.05 s"),
    ("migrate-cmd", "migrate_cmd_downtime_s", "`crisp migrate`: downtime it reports, frozen → running (s)", ""),
    ("migrate-cmd", "migrate_cmd_total_s", "`crisp migrate`: all pages moved, as it reports (s)", "≤ 1.0 s at 1 GiB"),
    ("migrate-precopy", "postcopy_gap_s", "workload writing 10%/s, `crisp migrate` (post-copy): application-visible gap (s)", ""),
    ("migrate-precopy", "precopy_gap_s", "workload writing 10%/s, `crisp migrate --pre-copy`: application-visible gap (s)", ""),
    ("migrate-precopy", "postcopy_downtime_s", "10%/s, post-copy: downtime it reports (s)", ""),
    ("migrate-precopy", "precopy_downtime_s", "10%/s, pre-copy: downtime it reports (s)", ""),
    ("migrate-precopy", "postcopy_total_s", "10%/s, post-copy: all pages moved (s)", ""),
    ("migrate-precopy", "precopy_total_s", "10%/s, pre-copy: all pages moved (s)", ""),
    ("migrate-precopy", "postcopy_mib_moved", "10%/s, post-copy: MiB moved", ""),
    ("migrate-precopy", "precopy_mib_moved", "10%/s, pre-copy: MiB moved (all rounds)", ""),
    ("migrate-precopy", "precopy_rounds", "10%/s, pre-copy: rounds while running (count)", ""),
    ("migrate-precopy", "precopy_frozen_mib", "10%/s, pre-copy: MiB sent while frozen", ""),
    ("migrate-precopy", "precopy_round_frozen_max_s", "10%/s, pre-copy: longest freeze of a round while running (s)", ""),
]


def fmt(values):
    if not values:
        return "—"
    med = statistics.median(values)
    return f"{med:.4g} ({min(values):.4g}–{max(values):.4g})"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="64,256,1024")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--crisp", default=os.path.join(ROOT, "out", "crisp"))
    ap.add_argument("--no-build", action="store_true", help="use the existing out/crisp")
    ap.add_argument("--criu", default=None, help="criu binary to run side by side (default: criu4, else criu, on PATH)")
    ap.add_argument("--no-criu", action="store_true")
    ap.add_argument("--output", default=os.path.join(ROOT, "docs", "BENCHMARKS.md"))
    ap.add_argument("--tmpfs", default="/dev/shm")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench: run as root (dump and restore need ptrace and CAP_SYS_ADMIN)")

    if not args.no_build:
        sh(["dotnet", "publish", os.path.join(ROOT, "src", "Crisp.Cli"), "-c", "Release", "-r", "linux-x64",
            "-o", os.path.join(ROOT, "out"), "--nologo", "-v", "q"])
    bindir = tempfile.mkdtemp(prefix="crisp-bench-bin-")
    tls = make_pki(bindir) if "migrate-tls" in args.scenarios.split(",") else None
    memtouch = compiled(bindir, "tests/workloads/memtouch.c", "-pthread")
    workset = compiled(bindir, "tests/workloads/workset.c")
    dirtier = compiled(bindir, "tests/workloads/dirtier.c")

    tools = [("crisp", args.crisp, True)]
    criu = None if args.no_criu else (args.criu or shutil.which("criu4") or shutil.which("criu"))
    if criu:
        tools.append(("criu", criu, False))
    sizes = [int(s) for s in args.sizes.split(",")]
    scenarios = [s for s in args.scenarios.split(",") if s]
    results = {}  # (tool, size, key) -> [values]
    failures = {}
    # CRIU's lazy migration moves pages through a pipe that must hold 4 MiB (root here lacks
    # CAP_SYS_RESOURCE to grow one past the limit): raised for the run, put back after.
    pipe_max = "/proc/sys/fs/pipe-max-size"
    old_pipe_max = open(pipe_max).read().strip()
    if criu and int(old_pipe_max) < 4 << 20:
        with open(pipe_max, "w") as f:
            f.write(str(4 << 20))
    try:
        for mib in sizes:
            for sc in scenarios:
                for run in range(args.runs):
                    # Interleaved: each run takes every tool once, so they share the machine's state;
                    # which goes first alternates from run to run, since tmpfs takes pages freed a
                    # moment ago far faster than older ones (the second of a pair gains).
                    for name, binary, is_crisp in (tools if run % 2 == 0 else tools[::-1]):
                        if (name, sc, mib) in failures or (sc in CRISP_ONLY and not is_crisp):
                            continue  # failed once already; CRIU has no one-command migration; the floor is the machine's
                        tmp = tempfile.mkdtemp(prefix=f"cb-{sc}-", dir=args.tmpfs)  # short: unix socket paths below it hold 107 bytes
                        try:
                            if sc == "floor":
                                r = scenario_floor(mib, tmp, bindir)
                            elif sc == "dump":
                                r = scenario_dump(binary, memtouch, mib, tmp)
                            elif sc == "restore":
                                r = scenario_restore(binary, memtouch, mib, tmp)
                            elif sc == "restore-huge":
                                r = scenario_restore(binary, memtouch, mib, tmp, huge=True)
                            elif sc == "lazy":
                                r = scenario_lazy(binary, memtouch, mib, tmp, is_crisp)
                            elif sc == "migrate":
                                r = scenario_migrate(binary, memtouch, mib, tmp)
                            elif sc == "migrate-tls":
                                r = scenario_migrate(binary, memtouch, mib, tmp, tls=tls)
                            elif sc == "migrate-pidns":
                                r = scenario_migrate(binary, memtouch, mib, tmp, pidns=True)
                            elif sc == "workset":
                                import workset as ws  # bench/workset.py
                                r = ws.scenario_workset(binary, workset, mib, tmp, is_crisp)
                            elif sc == "migrate-precopy":
                                r = scenario_migrate_precopy(binary, dirtier, mib, tmp)
                            else:
                                r = scenario_migrate_cmd(binary, memtouch, mib, tmp)
                            for k, v in r.items():
                                results.setdefault((name, mib, k), []).append(v)
                            print(f"{name} {sc} {mib} MiB run {run + 1}: " +
                                  ", ".join(f"{k}={v:.4g}" for k, v in r.items()), flush=True)
                        except (BenchError, subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
                            failures.setdefault((name, sc, mib), str(e))
                            print(f"{name} {sc} {mib} MiB run {run + 1}: FAILED: {e}", flush=True)
                        finally:
                            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        with open(pipe_max, "w") as f:
            f.write(old_pipe_max)
    shutil.rmtree(bindir, ignore_errors=True)
    write_report(args, tools, sizes, scenarios, results, failures)


def write_report(args, tools, sizes, scenarios, results, failures):
    cpu = ""
    try:
        for l in open("/proc/cpuinfo"):
            if l.startswith("model name"):
                cpu = l.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    lines = ["# crisp benchmarks", "",
             f"Generated {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC} by",
             "", "```", "sudo python3 bench/bench.py " + " ".join(sys.argv[1:]), "```", "",
             f"Machine: Linux {platform.release()}, {os.cpu_count()} CPUs ({cpu}), "
             f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') // 2**30} GiB. Images on tmpfs ({args.tmpfs}). "
             f"crisp: Native AOT `{args.crisp}`. Workload: `tests/workloads/memtouch.c`. "
             f"Each cell: median (min–max) of {args.runs} runs.", ""]
    if len(tools) == 1:
        lines += ["No CRIU ran side by side (`criu4` not on PATH: `../shared/criu/build.sh` builds CRIU 4.2), "
                  "so there are no ratios: figures from another day or kernel build are not comparable.", ""]
    else:
        lines += [f"CRIU side by side: `{tools[1][1]}` ({criu_version(tools[1][1])}), run interleaved with crisp "
                  "(each run takes both tools in turn, crisp first in odd runs, CRIU first in even ones). Ratio rows are crisp / CRIU: below 1.00 crisp is faster.", ""]
    lines += ["Migration on one host: the destination (lazy-pages + restore, or `crisp agent`) runs in a new pid "
              "namespace (`unshare --pid --fork --mount-proc`), as it would have its own pid space on another machine. "
              "The gap is the largest interval between two heartbeat lines (written every 10 ms), so it includes up to "
              "one 10 ms tick.", ""]
    for sc in scenarios:
        import workset as ws  # bench/workset.py: its figures
        figs = [f for f in FIGURES + ws.FIGURES if f[0] == sc]
        lines += [f"## {sc}", "", "| figure | tool | " + " | ".join(f"{s} MiB" for s in sizes) + " | target |",
                  "|---|---|" + "---|" * len(sizes) + "---|"]
        for _, key, label, target in figs:
            for name, _, _ in tools:
                cells = [fmt(results.get((name, s, key), [])) for s in sizes]
                if all(c == "—" for c in cells):
                    continue
                lines.append(f"| {label} | {name} | " + " | ".join(cells) + f" | {target if name == 'crisp' else ''} |")
            if len(tools) > 1:
                ratios = []
                for s in sizes:
                    a, b = results.get(("crisp", s, key)), results.get((tools[1][0], s, key))
                    ratios.append(f"{statistics.median(a) / statistics.median(b):.2f}" if a and b and statistics.median(b) > 0 else "—")
                if any(r != "—" for r in ratios):
                    lines.append(f"| {label}: **crisp / CRIU** | | " + " | ".join(ratios) + " | |")
        if sc == "migrate-tls":
            # Encryption's cost: each tool's TLS run against its own plaintext run of the same size.
            for name, _, _ in tools:
                ratios = []
                for s in sizes:
                    a, b = results.get((name, s, "migrate_tls_all_pages_s")), results.get((name, s, "migrate_all_pages_s"))
                    ratios.append(f"{statistics.median(a) / statistics.median(b):.2f}" if a and b else "—")
                if any(r != "—" for r in ratios):
                    lines.append(f"| all pages moved: **--tls / plaintext** | {name} | " + " | ".join(ratios) + " | |")
        fails = [(k, v) for k, v in failures.items() if k[1] == sc]
        if fails:
            lines.append("")
            for (name, _, mib), msg in fails:
                lines.append(f"- {name} {sc} {mib} MiB failed: {msg}")
        lines.append("")
    with open(args.output, "w") as f:
        f.write("\n".join(lines))
    print(f"wrote {args.output}")
    # The README's tables are docs/BENCHMARKS.md's: a report written elsewhere (a trial run) leaves them alone.
    if os.path.abspath(args.output) == os.path.join(ROOT, "docs", "BENCHMARKS.md"):
        update_readme(args.output)


def criu_version(binary):
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
        return out.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "version unknown"


def update_readme(report):
    """Copies the report's tables into README.md between its bench markers."""
    readme = os.path.join(ROOT, "README.md")
    start, end = "<!-- bench:start -->", "<!-- bench:end -->"
    with open(readme) as f:
        text = f.read()
    if start not in text or end not in text:
        return
    with open(report) as f:
        body = f.read().split("\n", 2)[2].strip()  # without the title line
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    with open(readme, "w") as f:
        f.write(head + start + "\n" + body + "\n" + end + tail)
    print(f"updated {readme}")


if __name__ == "__main__":
    main()
