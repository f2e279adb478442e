"""A redis client that holds ONE connection: writes KEYS keys, then INCR every 10 ms, checking
every reply, until the stop file appears; then reads every key back. It never reconnects: a
closed or reset connection ends it with an error line. Prints "replies N max_gap_ms G" as it
goes and "client done ..." (or "client bad ...") at the end; the largest gap between two
replies is what a migration cost it.

usage: redisclient.py HOST PORT KEYS STOPFILE"""
import os
import socket
import sys
import time

host, port, nkeys, stop = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
s = socket.create_connection((host, port), timeout=60)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
f = s.makefile('rb')
local = s.getsockname()


def reply():
    line = f.readline()
    if not line:
        raise IOError("the server closed the connection")
    t, rest = line[:1], line[1:-2]
    if t in (b'+', b':'):
        return rest
    if t == b'-':
        raise IOError("error reply: %r" % rest)
    if t == b'$':
        n = int(rest)
        return None if n < 0 else f.read(n + 2)[:-2]
    if t == b'*':
        return [reply() for _ in range(int(rest))]
    raise IOError("unexpected reply %r" % line)


def cmd(*args):
    out = b'*%d\r\n' % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out += b'$%d\r\n%s\r\n' % (len(a), a)
    s.sendall(out)
    return reply()


def bad(why):
    print("client bad", why, flush=True)
    sys.exit(1)


try:
    for i in range(0, nkeys, 200):
        args = []
        for k in range(i, min(nkeys, i + 200)):
            args += ['key:%d' % k, 'value:%d:%s' % (k, 'x' * 100)]
        if cmd('MSET', *args) != b'OK':
            bad("MSET")
    print("keys written", nkeys, flush=True)
    n, gap, last = 0, 0.0, time.monotonic()
    while not os.path.exists(stop):
        r = cmd('INCR', 'counter')
        now = time.monotonic()
        n += 1
        if int(r) != n:
            bad("INCR gave %r, expected %d" % (r, n))
        gap = max(gap, now - last)
        last = now
        if n % 50 == 0:
            print("replies %d max_gap_ms %.1f" % (n, gap * 1000), flush=True)
        time.sleep(0.01)
    for i in range(0, nkeys, 500):
        keys = ['key:%d' % k for k in range(i, min(nkeys, i + 500))]
        for k, v in zip(range(i, i + len(keys)), cmd('MGET', *keys)):
            if v != b'value:%d:%s' % (k, b'x' * 100):
                bad("key %d is %r" % (k, v))
    if s.getsockname() != local:
        bad("the connection changed")
    print("client done replies %d max_gap_ms %.1f keys %d" % (n, gap * 1000, nkeys), flush=True)
except (IOError, OSError) as e:
    bad("%s: %s" % (type(e).__name__, e))
