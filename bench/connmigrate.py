#!/usr/bin/env python3
"""The client-visible gap of a redis migration with a live connection, crisp beside CRIU 4.2.

    sudo python3 bench/connmigrate.py [--crisp out/crisp] [--criu criu4] [--sizes 64,1024] [--runs 3]

Three network namespaces per run: A (redis-server on a service address, a /32 beside A's own),
B (the destination) and C (a bridge joining A's and B's veth pairs, and the client). The client,
tests/workloads/redisclient.py, holds ONE connection and sends INCR every 10 ms, checking each
reply; its largest gap between two replies is the figure. redis holds SIZE MiB of values
(DEBUG POPULATE, 64 KiB each) besides the counter; after the move DBSIZE must be what it was.

crisp: `crisp agent --move-address-dev DEV` in B (in a new pid namespace), then in A
`crisp migrate PID --to B --tcp-established --move-address SERVICE`: post-copy, the address moves
with the tree (deleted in A once frozen, added in B before the restore, announced by ARP).

CRIU has no migrate command and moves no address; its shape, as its docs give it: in A
`criu dump --tcp-established --lazy-pages --network-lock nftables --address A --port P`; once
it serves, the bench does what an action script would (delete the address in A, add it in B),
copies the images, and in B runs `criu lazy-pages --page-server` and
`criu restore --tcp-established --lazy-pages` (in a new pid namespace). CRIU leaves its lock table
in A (its rule: the restore removes it, but the restore ran elsewhere); the namespace goes with the run.
"""
import argparse
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLIENT = os.path.join(ROOT, "tests", "workloads", "redisclient.py")
PORT = 6390
VALUE = 65536


class BenchError(Exception):
    pass


def sh(*cmd, check=True):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if check and r.returncode != 0:
        raise BenchError(f"{' '.join(cmd)}: exit {r.returncode}: {r.stdout.strip()}")
    return r.stdout


def wait(pred, timeout, what):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return
        time.sleep(0.02)
    raise BenchError(f"timed out waiting for {what}")


def read(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


class Topology:
    """A, B, C and the bridge; removed by close() (deleting a namespace takes its rules and addresses)."""

    def __init__(self):
        self.tag = "%05x" % random.randrange(1 << 20)
        self.net = f"10.{200 + random.randrange(50)}.{random.randrange(250)}"
        self.a, self.b, self.c = (f"bm-{x}-{self.tag}" for x in "abc")
        self.dev_a, self.dev_b = f"a{self.tag}", f"b{self.tag}"
        self.service = f"{self.net}.10"
        self.addr_a, self.addr_b = f"{self.net}.2", f"{self.net}.3"
        try:
            for ns in (self.a, self.b, self.c):
                sh("ip", "netns", "add", ns)
                sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", self.c, "link", "add", "br0", "type", "bridge")
            sh("ip", "-n", self.c, "addr", "add", f"{self.net}.1/24", "dev", "br0")
            sh("ip", "-n", self.c, "link", "set", "br0", "up")
            for ns, dev, own in ((self.a, self.dev_a, self.addr_a), (self.b, self.dev_b, self.addr_b)):
                peer = "c" + dev
                sh("ip", "link", "add", dev, "type", "veth", "peer", "name", peer)
                sh("ip", "link", "set", dev, "netns", ns)
                sh("ip", "link", "set", peer, "netns", self.c)
                sh("ip", "-n", self.c, "link", "set", peer, "master", "br0")
                sh("ip", "-n", self.c, "link", "set", peer, "up")
                sh("ip", "-n", ns, "addr", "add", f"{own}/24", "dev", dev)
                sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", self.a, "addr", "add", f"{self.service}/32", "dev", self.dev_a)
        except Exception:
            self.close()
            raise

    def exec(self, ns):
        return ["ip", "netns", "exec", ns]

    def close(self):
        for ns in (self.a, self.b, self.c):
            sh("ip", "netns", "del", ns, check=False)


class Run:
    """One migration: redis in A with SIZE MiB, the client in C; tracks every process it starts."""

    def __init__(self, mib, tmp):
        self.tmp = tmp
        self.top = Topology()
        self.procs = []
        self.extra_pids = []
        self.stop = os.path.join(tmp, "stop")
        self.client_log = os.path.join(tmp, "client.log")
        try:
            # Its stdio opened inside the mount namespace `ip netns exec` made (CRIU looks their mounts up there).
            self.redis = self.start("redis-sh", self.top.exec(self.top.a) + [
                "sh", "-c", 'exec redis-server --port %d --bind %s --save "" --appendonly no --protected-mode no '
                '--enable-debug-command yes </dev/null >%s 2>&1' % (PORT, self.top.service, os.path.join(tmp, "redis.log"))])
            wait(lambda: "Ready to accept" in read(os.path.join(tmp, "redis.log")), 30, "redis")
            keys = mib * (1 << 20) // VALUE
            self.cli("DEBUG", "POPULATE", str(keys), "data", str(VALUE))
            self.dbsize = int(self.cli("DBSIZE"))
            self.client = self.start("client", self.top.exec(self.top.c) + [
                sys.executable, CLIENT, self.top.service, str(PORT), "0", self.stop])
            wait(lambda: self.replies() >= 100, 60, "the client's first replies")
        except Exception:
            self.close()
            raise

    def start(self, name, argv):
        log = open(os.path.join(self.tmp, name + ".log"), "w")
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.procs.append(p)
        return p

    def cli(self, *args, ns=None):
        out = sh(*self.top.exec(ns or self.top.c), "redis-cli", "-h", self.top.service, "-p", str(PORT), *args)
        return out.strip()

    def replies(self):
        m = re.findall(r"replies (\d+)", read(self.client_log))
        return int(m[-1]) if m else 0

    def finish(self):
        """Waits for 100 more replies on the same connection, stops the client; returns its largest gap (s)."""
        n = self.replies()
        wait(lambda: self.replies() >= n + 100 or "client bad" in read(self.client_log), 120, "replies after the migration")
        with open(self.stop, "w"):
            pass
        wait(lambda: "client done" in read(self.client_log) or "client bad" in read(self.client_log), 60, "the client's end")
        log = read(self.client_log)
        m = re.search(r"client done replies \d+ max_gap_ms ([\d.]+)", log)
        if not m:
            raise BenchError(f"the client failed: {log.strip().splitlines()[-1]}")
        # the client's INCR counter is one key more than DEBUG POPULATE made
        size = int(self.cli("DBSIZE"))
        if size != self.dbsize + 1:
            raise BenchError(f"redis holds {size} keys after the move, {self.dbsize + 1} expected")
        return float(m.group(1)) / 1000

    def close(self):
        for pid in self.extra_pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for p in reversed(self.procs):
            if p.poll() is None:
                p.kill()
            p.wait()
        self.top.close()


def crisp_once(crisp, mib, tmp):
    r = Run(mib, tmp)
    try:
        t = r.top
        agent = r.start("agent", t.exec(t.b) + ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"] + crisp + [
            "agent", "--listen", f"{t.addr_b}:0", "--insecure", "--move-address-dev", t.dev_b, "-W", tmp])
        wait(lambda: re.search(r"listening on \S+:(\d+)", read(os.path.join(tmp, "agent.log"))), 60, "the agent")
        port = re.search(r"listening on \S+:(\d+)", read(os.path.join(tmp, "agent.log"))).group(1)
        m = subprocess.run(t.exec(t.a) + crisp + ["migrate", str(r.redis.pid), "--to", f"{t.addr_b}:{port}", "--insecure",
                                                 "--tcp-established", "--move-address", t.service, "--json"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=600)
        if m.returncode != 0:
            raise BenchError(f"crisp migrate failed: {m.stderr.strip()[:600]}")
        down = float(re.search(r'"downtime_ms": ([\d.]+)', m.stdout).group(1)) / 1000
        total = float(re.search(r'"total_ms": ([\d.]+)', m.stdout).group(1)) / 1000
        gap = r.finish()
        return {"gap": gap, "downtime": down, "total": total}
    finally:
        r.close()


def criu_once(criu, mib, tmp):
    r = Run(mib, tmp)
    try:
        t = r.top
        src, dst = os.path.join(tmp, "src"), os.path.join(tmp, "dst")
        os.makedirs(src)
        port = str(20000 + random.randrange(20000))
        fifo = os.path.join(tmp, "dump.status")
        os.mkfifo(fifo)
        t0 = time.perf_counter()
        # in redis's own mount namespace (each `ip netns exec` makes one): CRIU would dump a foreign one's mounts
        dump = r.start("dump", ["sh", "-c", 'exec "$@" 3>' + fifo, "sh", "nsenter", "-t", str(r.redis.pid), "-m", "-n", "--"] + [
            criu, "dump", "-t", str(r.redis.pid), "-D", src, "--tcp-established", "--lazy-pages", "--network-lock", "nftables",
            "--address", t.addr_a, "--port", port, "--status-fd", "3", "-o", "dump.log", "-v2"])
        with open(fifo, "rb") as f:
            if f.read(1) != b"\0":
                raise BenchError(f"criu dump did not serve: {read(os.path.join(src, 'dump.log'))[-600:]}")
        # what an action script would do: the address leaves A, comes up in B
        sh(*t.exec(t.a), "ip", "addr", "del", f"{t.service}/32", "dev", t.dev_a)
        shutil.copytree(src, dst)
        sh(*t.exec(t.b), "ip", "addr", "add", f"{t.service}/32", "dev", t.dev_b)
        lazy_fifo = os.path.join(tmp, "lazy.status")
        os.mkfifo(lazy_fifo)
        lazy = r.start("lazy", ["sh", "-c", 'exec "$@" 3>' + lazy_fifo, "sh"] + t.exec(t.b) + [
            criu, "lazy-pages", "--page-server", "--address", t.addr_a, "--port", port, "-D", dst, "--status-fd", "3",
            "-o", "lazy.log", "-v2"])
        with open(lazy_fifo, "rb") as f:
            if f.read(1) != b"\0":
                raise BenchError(f"criu lazy-pages did not start: {read(os.path.join(dst, 'lazy.log'))[-600:]}")
        restore = r.start("restore", t.exec(t.b) + ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child", criu, "restore",
                                                    "-D", dst, "--tcp-established", "--lazy-pages", "-o", "restore.log", "-v2"])
        lazy.wait(timeout=600)
        total = time.perf_counter() - t0
        if lazy.returncode != 0:
            raise BenchError(f"criu lazy-pages exited {lazy.returncode}: {read(os.path.join(dst, 'lazy.log'))[-600:]}")
        dump.wait(timeout=120)
        if restore.poll() is not None:
            raise BenchError(f"criu restore ended: {read(os.path.join(dst, 'restore.log'))[-600:]}")
        gap = r.finish()
        return {"gap": gap, "total": total}
    finally:
        r.close()


def fmt(v):
    if not v:
        return "failed"
    med = statistics.median(v)
    return f"{med:.3f} ({min(v):.3f}–{max(v):.3f})"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--crisp", default=os.path.join(ROOT, "out", "crisp"), help="crisp binary (or 'dotnet path/crisp.dll')")
    ap.add_argument("--criu", default=shutil.which("criu4"))
    ap.add_argument("--sizes", default="64,1024")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tmpfs", default="/dev/shm")
    args = ap.parse_args()
    crisp = args.crisp.split()
    pipe_max = "/proc/sys/fs/pipe-max-size"
    old = read(pipe_max).strip()
    if args.criu and int(old) < 4 << 20:
        with open(pipe_max, "w") as f:
            f.write(str(4 << 20))  # CRIU's lazy migration needs a 4 MiB pipe (see bench.py)
    results = {}
    try:
        for mib in [int(s) for s in args.sizes.split(",")]:
            for run in range(args.runs):
                for name in ("crisp", "criu"):
                    if name == "criu" and not args.criu:
                        continue
                    tmp = tempfile.mkdtemp(prefix="cm-", dir=args.tmpfs)
                    try:
                        r = crisp_once(crisp, mib, tmp) if name == "crisp" else criu_once(args.criu, mib, tmp)
                        print(f"{name} {mib} MiB run {run}: {r}", flush=True)
                        for k, v in r.items():
                            results.setdefault((name, mib, k), []).append(v)
                    except (BenchError, subprocess.TimeoutExpired, OSError) as e:
                        print(f"{name} {mib} MiB run {run}: FAILED: {e}", flush=True)
                        results.setdefault((name, mib, "failed"), []).append(str(e)[:300])
                    finally:
                        shutil.rmtree(tmp, ignore_errors=True)
    finally:
        if args.criu and int(old) < 4 << 20:
            with open(pipe_max, "w") as f:
                f.write(old)
    print()
    print("| figure | tool | " + " | ".join(f"{m} MiB" for m in args.sizes.split(",")) + " |")
    print("|---|---|" + "---|" * len(args.sizes.split(",")))
    for key, what in (("gap", "largest gap between two replies on the live connection (s)"),
                      ("downtime", "downtime crisp reports, frozen → running in B (s)"),
                      ("total", "all pages moved (s)")):
        for name in ("crisp", "criu"):
            cells = [fmt(results.get((name, int(m), key), [])) for m in args.sizes.split(",")]
            if all(c == "failed" for c in cells) and not any(results.get((name, int(m), "failed")) for m in args.sizes.split(",")):
                continue
            print(f"| {what} | {name} | " + " | ".join(cells) + " |")
    for (name, mib, key), v in sorted(results.items()):
        if key == "failed":
            print(f"\n{name} {mib} MiB failures: " + " / ".join(v))


if __name__ == "__main__":
    main()
