#!/usr/bin/python3
"""delay_relay: a TCP relay that adds latency, and counts DICOM associations.

The kernel here has no netem, so a distant archive (a WAN link) is played by this
relay in front of a local one: every chunk read on one side is written to the other
side DELAY ms after it arrived (each direction; chunks keep their order and are not
held back by each other, so the relay adds latency, not a bandwidth limit).

It also reads the DICOM upper-layer PDU headers going through, and counts the
associations open at once (from the A-ASSOCIATE-AC to the A-RELEASE-RP, A-ABORT or
the connection's end): the peak is what a test asserts to show how many associations
a client used, whatever the peer behind the relay is.

With --max-associations N it also plays an archive at its own limit: a connection
that arrives while N others are relayed gets the A-ASSOCIATE-RJ such an archive sends
(rejected-transient, DICOM UL service-provider, local-limit-exceeded; PS3.8 9.3.4)
instead of being relayed, as dcmqrscp does past its MaxAssociations.

With --serve-at-once N it plays an archive that serves N connections at a time and
leaves the others waiting, unanswered, in its queue (as a single-process SCP does:
storescp without --fork, dcmqrscp --single-process): a connection beyond N is
relayed only once one of the N has ended.

    delay_relay.py --target HOST:PORT [--port 0] [--delay-ms 5] [--stats FILE]
                   [--max-associations N] [--serve-at-once N]

Prints the port it listens on (first line of stdout), then runs until SIGTERM/SIGINT.
--stats FILE is rewritten (atomically) whenever the counts change:
    {"connections": N, "associations": N, "open": N, "peak": N, "refused": N, "queued": N}
"""
import argparse
import asyncio
import json
import os
import signal
import socket

A_ASSOCIATE_AC, A_RELEASE_RP, A_ABORT = 0x02, 0x06, 0x07
# A-ASSOCIATE-RJ: type 3, length 4, reserved, result 2 (rejected-transient), source 3
# (service-provider, presentation related), reason 2 (local-limit-exceeded).
A_ASSOCIATE_RJ_BUSY = bytes([0x03, 0x00, 0, 0, 0, 4, 0x00, 2, 3, 2])
CHUNK = 256 * 1024


class Stats:
    def __init__(self, path):
        self.path = path
        self.connections = self.associations = self.open = self.peak = self.refused = self.queued = 0
        self.relayed = 0  # connections being relayed now (one association each)
        self.write()

    def write(self):
        if not self.path:
            return
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"connections": self.connections, "associations": self.associations,
                       "open": self.open, "peak": self.peak, "refused": self.refused,
                       "queued": self.queued}, f)
        os.replace(tmp, self.path)

    def associated(self):
        self.associations += 1
        self.open += 1
        self.peak = max(self.peak, self.open)
        self.write()

    def ended(self):
        self.open -= 1
        self.write()


class PduWatch:
    """Follows the PDU boundaries of one direction and reports each PDU type."""

    def __init__(self, on_pdu):
        self.on_pdu = on_pdu
        self.header = b""
        self.skip = 0

    def feed(self, data):
        i, n = 0, len(data)
        while i < n:
            if self.skip:
                take = min(self.skip, n - i)
                self.skip -= take
                i += take
                continue
            need = 6 - len(self.header)
            self.header += data[i:i + need]
            i += need
            if len(self.header) == 6:
                self.on_pdu(self.header[0])
                self.skip = int.from_bytes(self.header[2:6], "big")
                self.header = b""


class Connection:
    def __init__(self, stats):
        self.stats = stats
        self.in_association = False

    def on_pdu(self, kind):
        if kind == A_ASSOCIATE_AC and not self.in_association:
            self.in_association = True
            self.stats.associated()
        elif kind in (A_RELEASE_RP, A_ABORT):
            self.end()

    def end(self):
        if self.in_association:
            self.in_association = False
            self.stats.ended()


async def pump(reader, writer, delay, watch):
    """Copies reader to writer, each chunk `delay` seconds after it arrived."""
    loop = asyncio.get_running_loop()
    queue = asyncio.Queue()

    async def send():
        while True:
            due, data = await queue.get()
            if data is None:
                break
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if watch:
                watch.feed(data)
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()

    sender = asyncio.ensure_future(send())
    try:
        while True:
            data = await reader.read(CHUNK)
            queue.put_nowait((loop.time() + delay, data if data else None))
            if not data:
                break
        await sender
    except (ConnectionError, OSError):
        sender.cancel()


def nodelay(writer):
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--target", required=True, help="HOST:PORT to relay to")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--delay-ms", type=float, default=5.0, help="added latency per direction")
    p.add_argument("--stats", help="JSON file of association counts")
    p.add_argument("--max-associations", type=int, default=0,
                   help="refuse (A-ASSOCIATE-RJ, transient) a connection beyond N at once; 0: no limit")
    p.add_argument("--serve-at-once", type=int, default=0,
                   help="relay N connections at a time, the others waiting unanswered; 0: no limit")
    args = p.parse_args()
    target_host, target_port = args.target.rsplit(":", 1)
    delay = args.delay_ms / 1000.0
    stats = Stats(args.stats)
    serving = asyncio.Semaphore(args.serve_at_once) if args.serve_at_once else None

    async def refuse(client_reader, client_writer):
        try:
            header = await client_reader.readexactly(6)  # the A-ASSOCIATE-RQ's header
            await client_reader.readexactly(int.from_bytes(header[2:6], "big"))
            client_writer.write(A_ASSOCIATE_RJ_BUSY)
            await client_writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        stats.refused += 1
        stats.write()
        client_writer.close()

    async def handle(client_reader, client_writer):
        nodelay(client_writer)
        if args.max_associations and stats.relayed >= args.max_associations:
            await refuse(client_reader, client_writer)
            return
        if serving is not None:
            if serving.locked():
                stats.queued += 1
                stats.write()
            await serving.acquire()
        stats.relayed += 1
        try:
            await relay(client_reader, client_writer)
        finally:
            stats.relayed -= 1
            if serving is not None:
                serving.release()

    async def relay(client_reader, client_writer):
        try:
            server_reader, server_writer = await asyncio.open_connection(target_host, int(target_port))
        except OSError:
            client_writer.close()
            return
        nodelay(server_writer)
        stats.connections += 1
        stats.write()
        conn = Connection(stats)
        try:
            await asyncio.gather(pump(client_reader, server_writer, delay, PduWatch(conn.on_pdu)),
                                 pump(server_reader, client_writer, delay, PduWatch(conn.on_pdu)))
        finally:
            conn.end()
            for w in (client_writer, server_writer):
                w.close()

    server = await asyncio.start_server(handle, args.host, args.port, backlog=128)
    print(server.sockets[0].getsockname()[1], flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
