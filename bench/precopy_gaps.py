#!/usr/bin/env python3
"""Where the gap a pre-copy migration's workload sees comes from.

    python3 bench/precopy_gaps.py [--crisp out/crisp] [--mib 1024] [--percent 10] [--runs 1]

Runs `crisp migrate --pre-copy --json` of tests/workloads/dirtier.c (MIB MiB, PERCENT% of it
rewritten a second, a heartbeat line every 10 ms with its CLOCK_REALTIME) to a `crisp agent` in
its own pid namespace, checks every page of the restored copy, then prints every interval of
more than 50 ms between two heartbeats and what crisp was doing then: each pre-copy round's
freeze (from before its first seize to its resume, as `--json` reports them on the same clock)
and the final freeze (from its first seize to the agent's "running").
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402


def attribute(t0, t1, stats):
    """The crisp phases that overlap [t0, t1] (ns), with their own length."""
    names = []
    for i, r in enumerate(stats["pre_copy_rounds"]):
        a, b = r["freeze_unix_ns"], r["resumed_unix_ns"]
        if a < t1 and b > t0:
            names.append(f"round {i} frozen {(b - a) / 1e6:.0f} ms ({r['pages']} pages, round {r['round_ms']:.0f} ms)")
    a, b = stats["final_freeze_unix_ns"], stats["running_unix_ns"]
    if a and a < t1 and (b == 0 or b > t0):
        names.append(f"final freeze → running {(b - a) / 1e6:.0f} ms (final {stats['final_pages']} pages)")
    return "; ".join(names) or "(no crisp freeze: the workload itself or the machine)"


def one(crisp, dirtier, mib, percent, tmp):
    w = bench.Workload(dirtier, mib, tmp, extra=[str(percent)])
    agent = None
    try:
        agent = bench.Agent(crisp, tmp)
        port = agent.port
        t_start = time.clock_gettime_ns(time.CLOCK_REALTIME)
        r = subprocess.run([crisp, "migrate", str(w.pid), "--to", f"127.0.0.1:{port}", "--json", "--pre-copy"],
                           capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            raise bench.BenchError(f"crisp migrate failed: {r.stderr.strip()}")
        stats = json.loads(r.stdout[r.stdout.index("{"):])
        gap = bench.resumed_gap(w, stats["final_freeze_unix_ns"])
        # Before the check: the process writes no heartbeat while it checks its memory.
        ticks = [t for t in w.ticks() if t[1] >= t_start - 200_000_000]
        w.check(bench.find_restored(agent.proc.pid, os.path.basename(dirtier)))
        print(f"largest gap {gap:.3f} s; downtime crisp reports {stats['downtime_ms']:.1f} ms; "
              f"{len(stats['pre_copy_rounds'])} rounds, {stats['final_pages']} final pages, {stats['bytes_moved'] / (1 << 20):.0f} MiB moved; "
              f"memory check ok; load {os.getloadavg()[0]:.2f}")
        for a, b in zip(ticks, ticks[1:]):
            if b[1] - a[1] > 50_000_000:
                print(f"  gap {(b[1] - a[1]) / 1e9:.3f} s at +{(a[1] - t_start) / 1e9:.3f} s: {attribute(a[1], b[1], stats)}")
        return gap
    finally:
        bench.kill_pid(w.pid)
        if agent:
            agent.stop()
        if w.proc.poll() is None:
            w.proc.kill()
        w.proc.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--crisp", default=os.path.join(bench.ROOT, "out", "crisp"))
    ap.add_argument("--mib", type=int, default=1024)
    ap.add_argument("--percent", type=int, default=10)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--tmpfs", default="/dev/shm")
    args = ap.parse_args()
    bindir = tempfile.mkdtemp(prefix="crisp-gaps-bin-")
    try:
        dirtier = bench.compiled(bindir, "tests/workloads/dirtier.c")
        for _ in range(args.runs):
            tmp = tempfile.mkdtemp(prefix="cb-gaps-", dir=args.tmpfs)
            try:
                one(args.crisp, dirtier, args.mib, args.percent, tmp)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    finally:
        shutil.rmtree(bindir, ignore_errors=True)


if __name__ == "__main__":
    main()
