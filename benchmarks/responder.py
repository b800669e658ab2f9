"""
A minimal HTTP/1.1 responder as a Twisted protocol, for twistcluster and the
single-process server; C{responder.js} is the same for Node, byte for byte.

It answers each request head (up to its blank line) with a fixed response,
honouring C{Connection: close}.  C{/work} first runs a fixed loop
(C{BENCH_WORK_ITERATIONS}, the CPU-bound variant), C{/slow} first spends
C{BENCH_SLOW_MS} (20) ms of the process's CPU time (the uneven work).  Every
process writes what it served to C{BENCH_COUNTS_DIR}, if set, every 0.2 s
(C{worker-PID.json}).

    [TWISTCLUSTER_WORKER_ID=N] python -m benchmarks.responder PORT [reuseport]

With C{reuseport}, its socket is one of several on the port (C{SO_REUSEPORT}):
C{twisted-reuseport-2} runs two such processes, no cluster, the reference
for the none/reuseport policies.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import LoopingCall

WORK_ITERATIONS = int(os.environ.get("BENCH_WORK_ITERATIONS", "16000"))  # ~1 ms of CPython
SLOW_SECONDS = float(os.environ.get("BENCH_SLOW_MS", "20")) / 1000
MAX_HEAD = 64 * 1024  # a request head larger than this without its blank line is not HTTP
BACKLOG = 511  # Node's default, as every benchmarked server has
BODY = b"Hello, World!\n"


def makeResponse(workerId: str, close: bool) -> bytes:
    """
    The fixed response; the same bytes as C{responder.js} sends.
    """
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nX-Worker: %s\r\nConnection: %s"
    )
    return head % (len(BODY), workerId.encode(), b"close" if close else b"keep-alive") + b"\r\n\r\n" + BODY


#: The worker id in every response (C{X-Worker}) and count; 0 outside a cluster.
WORKER_ID = os.environ.get("TWISTCLUSTER_WORKER_ID", "0")
KEEP_ALIVE_RESPONSE, CLOSE_RESPONSE = makeResponse(WORKER_ID, False), makeResponse(WORKER_ID, True)
counts = {"connections": 0, "requests": 0}


def work(iterations: int) -> int:
    """
    A fixed amount of CPU work (the same loop as C{responder.js}).
    """
    x = 0
    for i in range(iterations):
        x = (x * 31 + i) & 0xFFFF
    return x


def spin(seconds: float) -> None:
    """
    Spend C{seconds} of this process's CPU time (not a loop count, which
    Node runs 25 times faster; C{responder.js} uses C{process.cpuUsage()}).
    """
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def writeCounts(directory: Path) -> None:
    record = {"worker": WORKER_ID, "pid": os.getpid(), **counts}
    target = directory / f"worker-{os.getpid()}.json"
    target.with_suffix(".tmp").write_text(json.dumps(record))
    target.with_suffix(".tmp").replace(target)


class HTTPResponder(Protocol):
    """
    One connection: answer each complete request head with the fixed response.
    """

    _buffer = b""

    def connectionMade(self) -> None:
        counts["connections"] += 1

    def dataReceived(self, data: bytes) -> None:
        transport: Any = self.transport
        if transport.disconnecting:
            return
        buffer = self._buffer + data
        while (end := buffer.find(b"\r\n\r\n")) >= 0:
            head, buffer = buffer[:end], buffer[end + 4 :]
            counts["requests"] += 1
            if head.startswith(b"GET /work"):
                work(WORK_ITERATIONS)
            elif head.startswith(b"GET /slow"):
                spin(SLOW_SECONDS)
            if b"connection: close" in head.lower():
                transport.write(CLOSE_RESPONSE)
                transport.loseConnection()
                return
            transport.write(KEEP_ALIVE_RESPONSE)
        if len(buffer) > MAX_HEAD:
            transport.loseConnection()
        self._buffer = buffer


class HTTPResponderFactory(Factory):
    """
    The responder's factory (C{twist cluster ... benchmarks.responder.HTTPResponderFactory}).
    """

    protocol = HTTPResponder
    noisy = False
    _reporter: LoopingCall | None = None

    def startFactory(self) -> None:
        if directory := os.environ.get("BENCH_COUNTS_DIR"):
            self._reporter = LoopingCall(writeCounts, Path(directory))
            self._reporter.start(0.2, now=True)

    def stopFactory(self) -> None:
        if self._reporter is not None and self._reporter.running:
            self._reporter.stop()
            self._reporter()


def main(port: int, reusePort: bool) -> None:
    from twisted.internet import reactor

    with socket.socket() as listening:
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, reusePort)
        listening.bind(("127.0.0.1", port))
        listening.listen(BACKLOG)
        listening.setblocking(False)
        reactor.adoptStreamPort(listening.fileno(), socket.AF_INET, HTTPResponderFactory())  # type: ignore[attr-defined]
    # One write, whole: the processes of twisted-reuseport share this output.
    os.write(sys.stdout.fileno(), f"ready on {port}\n".encode())
    reactor.run()


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2:] == ["reuseport"])
