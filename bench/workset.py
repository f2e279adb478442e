"""Working-set prefetch scenario for bench.py (`--scenarios workset`).

Workload: tests/workloads/workset.c: MIB MiB filled with a pattern; on SIGUSR1 it reads
MIB*4 pages (1/64 of them) in a fixed pseudo-random order, checking each, and reports how long
that took ("first read of the working set"); on SIGUSR2 it verifies every word and exits.

Each run dumps one process and lazily restores the same images (restore -d, daemon started with
--status-fd) three times with crisp:
  plain    lazy-pages --no-prefetch-order: today's lazy restore (CRIU runs this one too);
  record   lazy-pages --record-prefetch-order IMG/crisp-prefetch-order --record-window 3: the
           working set comes by fault and its order is recorded (a setup step; its read is slow);
  ordered  lazy-pages with the recording beside the images: the working set goes in first.
The figures: each restore's first read of the working set, time to full speed on it (restore
returns + that read), and the daemon's fault count. Every restore's memory is verified.
"""
import os
import signal
import time

import bench as B

RECORD_WINDOW_S = 3


def _wait_line(log, prefix, skip, timeout, what):
    end = time.time() + timeout
    while time.time() < end:
        try:
            with open(log) as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            lines = []
        for l in lines[skip:]:
            if l.startswith(prefix):
                return l, len(lines)
        time.sleep(0.005)
    raise B.BenchError(f"timed out waiting for {what} in {log}")


def _count(log):
    try:
        with open(log) as f:
            return len(f.read().splitlines())
    except FileNotFoundError:
        return 0


def _gone(pid, timeout=30):
    """Until the pid is free again (reaped, not only a zombie): the next restore needs it."""
    end = time.time() + timeout
    while time.time() < end:
        if not os.path.exists(f"/proc/{pid}"):
            return
        time.sleep(0.005)
    raise B.BenchError(f"restored pid {pid} did not exit")


def _lazy_restore(tool, images, tmp, log, name, is_crisp, daemon_args):
    stats_path = os.path.join(tmp, f"{name}-stats.json")
    out = open(os.path.join(tmp, f"{name}-lazy-pages.out"), "w")
    cmd = [tool, "lazy-pages", "-D", images, "-o", f"{name}-lazy-pages.log", "-v2"]
    if is_crisp:
        cmd += ["--json", stats_path] + daemon_args
    daemon = B.start_with_status_fd(cmd, tmp, name, out)
    pidfile = os.path.join(tmp, f"{name}.pid")
    pid = None
    try:
        t0 = B.now()
        B.sh([tool, "restore", "-D", images, "--lazy-pages", "-d", "-o", f"{name}-restore.log", "-v2", "--pidfile", pidfile])
        returned = B.now() - t0
        pid = B.read_pidfile(pidfile)
        n = _count(log)
        os.kill(pid, signal.SIGUSR1)
        line, _ = _wait_line(log, "workset ", n, 120, "working-set read")
        if not line.startswith("workset ok"):
            raise B.BenchError(f"{name}: working-set read failed after restore: {line}")
        read_s = int(line.split("read_ns=")[1].split()[0]) / 1e9
        daemon.wait(timeout=180)
        if daemon.returncode != 0:
            raise B.BenchError(f"{name}: lazy-pages exited with {daemon.returncode}")
        n = _count(log)
        os.kill(pid, signal.SIGUSR2)
        line, _ = _wait_line(log, "check ", n, 120, "memory check")
        if line != "check ok":
            raise B.BenchError(f"{name}: memory check failed after restore: {line}")
        _gone(pid)
        pid = None
        st = B.daemon_stats(stats_path)
        r = {f"ws_{name}_read_s": read_s, f"ws_{name}_full_speed_s": returned + read_s}
        if "faults" in st:
            r[f"ws_{name}_faults"] = st["faults"]
        if name == "ordered" and "working_set_pages" in st:
            r["ws_ordered_pushed_mib"] = st["working_set_pages"] * 4096 / 2**20
        return r
    finally:
        if pid:
            B.kill_pid(pid)
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        out.close()


def scenario_workset(tool, workset, mib, tmp, is_crisp):
    images = os.path.join(tmp, "img")
    os.makedirs(images)
    log = os.path.join(tmp, "workset.log")
    proc = B.subprocess.Popen([workset, str(mib), log, str(mib * 4)], stdin=B.subprocess.DEVNULL,
                              stdout=B.subprocess.DEVNULL, stderr=B.subprocess.DEVNULL, start_new_session=True, cwd=tmp)
    try:
        _wait_line(log, "ready", 0, 120, "workload ready")
        B.sh([tool, "dump", "-t", str(proc.pid), "-D", images, "-o", "dump.log", "-v2"])
        proc.wait()
    finally:
        if proc.poll() is None:
            B.kill_pid(proc.pid)
            proc.wait()
    r = _lazy_restore(tool, images, tmp, log, "plain", is_crisp, ["--no-prefetch-order"])
    if is_crisp:
        order = os.path.join(images, "crisp-prefetch-order")
        r.update(_lazy_restore(tool, images, tmp, log, "record", True,
                               ["--record-prefetch-order", order, "--record-window", str(RECORD_WINDOW_S)]))
        if not os.path.exists(order):
            raise B.BenchError("the recording run wrote no prefetch order")
        r.update(_lazy_restore(tool, images, tmp, log, "ordered", True, []))
    return r


FIGURES = [
    ("workset", "ws_plain_full_speed_s", "working set (1/64 of the pages, scattered): time to full speed, lazy restore without a recorded order (s)", ""),
    ("workset", "ws_ordered_full_speed_s", "the same with the recorded order beside the images (s)", ""),
    ("workset", "ws_plain_read_s", "first read of the working set, no recorded order (s)", ""),
    ("workset", "ws_ordered_read_s", "first read of the working set, recorded order (s)", ""),
    ("workset", "ws_record_read_s", "first read of the working set, recording run (background prefetch held) (s)", ""),
    ("workset", "ws_plain_faults", "faults, no recorded order (count)", ""),
    ("workset", "ws_record_faults", "faults, recording run (count)", ""),
    ("workset", "ws_ordered_faults", "faults, recorded order (count)", ""),
    ("workset", "ws_ordered_pushed_mib", "MiB pushed first from the recorded order", ""),
]
