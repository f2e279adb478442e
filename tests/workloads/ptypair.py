"""A pty pair with state for the pty tests (PtyRestoreTests.cs).

usage: ptypair.py LOG pair|outside
pair:    holds the master and a slave; its child leads a session whose controlling terminal is
         the pty. Bytes wait in both directions (a full line, a partial line, and their echo).
         SIGUSR1: print what the terminal holds; SIGUSR2: close the master (the child's SIGHUP).
outside: the child leads the session; a grandchild keeps only the master and ticks (a dump of
         the grandchild alone has a terminal whose session leader is outside its tree).
"""
import fcntl, os, signal, struct, sys, termios, time

TIOCGSID = 0x5429
log = open(sys.argv[1], "a", buffering=1)
mode = sys.argv[2]
m, s = os.openpty()
fcntl.ioctl(s, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 99, 0, 0))
os.write(m, b"hello\n")
os.write(m, b"part")
child = os.fork()
if child == 0:
    os.setsid()
    fcntl.ioctl(s, termios.TIOCSCTTY, 1)
    def hup(*_):
        log.write("child hup\n")
        os._exit(0)
    signal.signal(signal.SIGHUP, hup)
    if mode == "outside":
        g = os.fork()
        if g == 0:
            os.close(s)
            i = 0
            log.write(f"grandchild {os.getpid()} master {m}\n")
            while True:
                i += 1
                log.write(f"gtick {i}\n")
                time.sleep(0.02)
        log.write(f"child {os.getpid()}\n")
    # Only the parent (or the grandchild) holds the master: its close hangs the terminal up.
    os.close(m)
    while True:
        time.sleep(0.1)

def read_now(fd):
    os.set_blocking(fd, False)
    try:
        return os.read(fd, 100)
    except BlockingIOError:
        return b""

def check(*_):
    ws = struct.unpack("HHHH", fcntl.ioctl(m, termios.TIOCGWINSZ, b"\0" * 8))
    sid = struct.unpack("i", fcntl.ioctl(m, TIOCGSID, b"\0" * 4))[0]
    pgrp = struct.unpack("i", fcntl.ioctl(m, termios.TIOCGPGRP, b"\0" * 4))[0]
    line = read_now(s)
    attr = termios.tcgetattr(s)
    attr[3] &= ~termios.ICANON
    termios.tcsetattr(s, termios.TCSANOW, attr)
    partial = read_now(s)
    echo = read_now(m)
    os.write(m, b"ping")
    time.sleep(0.05)
    ping = read_now(s)
    log.write(f"check ws={ws[0]}x{ws[1]} sid={sid} pgrp={pgrp} line={line!r} partial={partial!r} echo={echo!r} ping={ping!r}\n")

def close_master(*_):
    os.close(m)
    log.write("master closed\n")

# The handlers only note the signal: run inside log.write (a signal landing in its write call),
# a handler writing to log too would be a reentrant call of the same buffered file.
pending = []
signal.signal(signal.SIGUSR1, lambda *_: pending.append(check))
signal.signal(signal.SIGUSR2, lambda *_: pending.append(close_master))
log.write(f"ready child {child}\n")
i = 0
while True:
    while pending:
        pending.pop(0)()
    i += 1
    log.write(f"tick {i}\n")
    time.sleep(0.02)
