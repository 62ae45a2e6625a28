#!/usr/bin/env python3
"""What a durable write of one received instance costs on this file system, three ways
(one thread, 128 KiB per file, N files each, in a new directory under TMPDIR):

  new     mkstemp, write, fdatasync, rename to the final name, fsync of the directory:
          what `rtbackup listen` does per instance;
  pooled  the same into a temporary file created (and made durable, with its directory)
          beforehand: the write skips the new file's first flush, which on ext4 without
          a journal also writes its directory (ext4_sync_parent);
  none    mkstemp, write, rename, no flush: what storescp does.

A probe for listen's next lever (a pool of pre-created temporary files), not a
product path:  python3 tests/bench/durable_write.py [N] [ROUNDS]
"""
import os
import sys
import tempfile
import time

N = int(sys.argv[1]) if len(sys.argv) > 1 else 300
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 3
DATA = os.urandom(128 * 1024)


def sync_dir(d):
    fd = os.open(d, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)


def put(fd, tmp, dest, flush):
    """Writes DATA into the open temporary and renames it to dest; flush: durably."""
    os.write(fd, DATA)
    if flush:
        os.fdatasync(fd)
    os.close(fd)
    os.rename(tmp, dest)
    if flush:
        sync_dir(os.path.dirname(dest))


def fresh(d, name, flush):
    """Each file into a temporary made just then (mkstemp), as listen did before."""
    t = time.perf_counter()
    for i in range(N):
        fd, p = tempfile.mkstemp(dir=d)
        put(fd, p, os.path.join(d, "%s%d.dcm" % (name, i)), flush)
    return time.perf_counter() - t


def new(d):
    return fresh(d, "new", True)


def pooled(d):
    pool = []
    for _ in range(N):
        fd, p = tempfile.mkstemp(dir=d)
        os.fsync(fd)
        pool.append((fd, p))
    sync_dir(d)
    t = time.perf_counter()
    for i, (fd, p) in enumerate(pool):
        put(fd, p, os.path.join(d, "pooled%d.dcm" % i), True)
    return time.perf_counter() - t


def none(d):
    return fresh(d, "none", False)


def main():
    runs = {"new": [], "pooled": [], "none": []}
    for _ in range(ROUNDS):
        for name, fn in (("new", new), ("pooled", pooled), ("none", none)):
            d = tempfile.mkdtemp()  # a fresh directory per run (see listen.bench.sh)
            runs[name].append(fn(d) / N * 1000)
            for f in os.listdir(d):
                os.unlink(os.path.join(d, f))
            os.rmdir(d)
    for name, ms in runs.items():
        ms.sort()
        print("%-6s median %.2f ms per file (runs %s)" % (name, ms[len(ms) // 2],
                                                           " ".join("%.2f" % m for m in ms)))


if __name__ == "__main__":
    main()
