#!/usr/bin/python3
"""Records what a DICOM client sends, as the seed of the scp_pdu fuzz target.

usage: capture_pdus.py OUT_FILE TARGET_PORT -- CLIENT ARGS...

Listens on a free loopback port, runs the client with "{port}" in its arguments
replaced by that port, relays the association to a real SCP on TARGET_PORT (both
ways, so the client gets real answers) and writes every byte the client sent to
OUT_FILE."""
import socket
import subprocess
import sys
import threading


def relay(src, dst, record):
    while True:
        data = src.recv(65536)
        if not data:
            break
        if record is not None:
            record.append(data)
        dst.sendall(data)
    try:
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def main():
    out, target_port = sys.argv[1], int(sys.argv[2])
    client = sys.argv[sys.argv.index("--") + 1:]
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    proc = subprocess.Popen([a.replace("{port}", str(port)) for a in client])
    conn, _ = listener.accept()
    upstream = socket.create_connection(("127.0.0.1", target_port))
    sent = []
    back = threading.Thread(target=relay, args=(upstream, conn, None))
    back.start()
    relay(conn, upstream, sent)
    back.join()
    if proc.wait() != 0:
        sys.exit("client failed: %s" % " ".join(client))
    with open(out, "wb") as f:
        f.write(b"".join(sent))


if __name__ == "__main__":
    main()
