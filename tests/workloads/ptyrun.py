"""Runs a command on a new pseudo-terminal and copies what it writes there to a log.

usage: ptyrun.py LOG PIDFILE ARGV...
The command becomes a session leader with the pty as controlling terminal (pty.fork) and stdin,
stdout and stderr on it. Its pid is written to PIDFILE. ptyrun exits when every holder of the
terminal's slave side has closed it, with the command's exit status."""
import os
import pty
import sys

log, pidfile, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
pid, master = pty.fork()
if pid == 0:
    os.execvp(argv[0], argv)
with open(pidfile + ".tmp", "w") as f:
    f.write(str(pid))
os.rename(pidfile + ".tmp", pidfile)
with open(log, "ab", buffering=0) as out:
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:
            break
        if not data:
            break
        out.write(data)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status) & 0xff)
