"""The lazy migration gap in CRIU's shape, step by step: wall-clock stamps (from the dump
command's start) of the dump ready, the images copied, the lazy-pages daemon ready, the
restore's pidfile, and the ticks either side of the gap. By hand, one run per call:

    python3 bench/gapsteps.py TOOL MIB [-vN]     (TOOL: out/crisp or criu4)

CRIU needs /proc/sys/fs/pipe-max-size >= 4 MiB for its lazy dump (bench.py sets it)."""
import sys, os, tempfile, shutil, time, subprocess
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench
from bench import *
bindir = tempfile.mkdtemp(prefix="gapsteps-bin-")
memtouch = bench.compiled(bindir, "tests/workloads/memtouch.c", "-pthread")
tool = sys.argv[1]; mib = int(sys.argv[2]); v = sys.argv[3] if len(sys.argv) > 3 else "-v2"
tmp = tempfile.mkdtemp(prefix="gs-", dir="/dev/shm")
src = os.path.join(tmp, "src"); dst = os.path.join(tmp, "dst"); os.makedirs(src)
w = Workload(memtouch, mib, tmp)
port = free_port(); out = open(os.path.join(tmp, "migrate.out"), "w"); procs = []
T = lambda: time.clock_gettime_ns(time.CLOCK_REALTIME)
st = {}
try:
    st["0 start"] = T()
    dumper = start_with_status_fd([tool, "dump", "-t", str(w.pid), "-D", src, "--lazy-pages", "--port", str(port), "--address", "127.0.0.1", "-o", "dump.log", v], tmp, "dump", out)
    procs.append(dumper); st["1 dump ready"] = T()
    shutil.copytree(src, dst); st["2 copied"] = T()
    daemon = start_with_status_fd([tool, "lazy-pages", "--page-server", "--address", "127.0.0.1", "--port", str(port), "-D", dst, "-o", "lazy-pages.log", v], tmp, "lazy", out)
    procs.append(daemon); st["3 lazy ready"] = T()
    pidfile = os.path.join(tmp, "restored.pid")
    restore = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", "--kill-child", tool, "restore", "-D", dst, "--lazy-pages", "-o", "restore.log", v, "--pidfile", pidfile], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    procs.append(restore)
    inner = read_pidfile(pidfile, timeout=60); st["4 pidfile"] = T()
    daemon.wait(timeout=300)
    dumper.wait(timeout=60)  # the source is done (and killed the tree) before anything is killed here
    gap = resumed_gap(w, st["0 start"])
    ticks = w.ticks()
    i = max(range(len(ticks)-1), key=lambda i: ticks[i+1][1]-ticks[i][1])
    before, after = ticks[i][1], ticks[i+1][1]
    st["last tick before"] = before; st["first tick after"] = after
    for k, x in sorted(st.items(), key=lambda kv: kv[1]):
        print(f"{(x - st['0 start'])/1e6:8.1f} ms  {k}")
    print("gap", gap)
finally:
    kill_pid(w.pid)
    for p in reversed(procs):
        if p.poll() is None: p.kill(); p.wait()
    if w.proc.poll() is None: w.proc.kill()
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(bindir, ignore_errors=True)
