"""Drives a program on a real pseudo-terminal, as an operator at a keyboard would.

usage: pty_drive.py STEPS.json -- PROGRAM ARGS...
STEPS is a list of [text to type, regex to wait for in the output (or null), seconds].
Prints everything the program wrote, then "[drive] exit N"; exits 3 when a regex did
not appear in time (the output so far is printed)."""
import json
import os
import pty
import re
import select
import sys
import time
steps = json.load(open(sys.argv[1]))
argv = sys.argv[3:]
pid, fd = pty.fork()
if pid == 0:
    os.execvp(argv[0], argv)
out = b""
def read_until(pattern, timeout):
    global out
    end = time.time() + timeout
    while time.time() < end:
        r, _, _ = select.select([fd], [], [], 0.05)
        if r:
            try:
                data = os.read(fd, 65536)
            except OSError:
                return pattern is None
            if not data:
                return pattern is None
            out += data
            if pattern and re.search(pattern.encode(), out):
                return True
    return pattern is None
for send, pattern, timeout in steps:
    if send:
        os.write(fd, send.encode())
    ok = read_until(pattern, timeout)
    if not ok:
        sys.stdout.write(out.decode(errors="replace"))
        sys.stdout.write("\n[drive] timed out waiting for %r\n" % pattern)
        os.kill(pid, 9)
        sys.exit(3)
_, status = os.waitpid(pid, 0)
read_until(None, 0.2)
sys.stdout.write(out.decode(errors="replace"))
sys.stdout.write("\n[drive] exit %d\n" % (os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)))
