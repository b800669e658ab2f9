"""
A minimal HTTP/1.1 responder as a Twisted protocol, for twistcluster and the
single-process server; C{responder.js} is the same for Node, byte for byte.

It looks for the blank line that ends a request's head, honours
C{Connection: close} and keep-alive, and writes a fixed response.  C{/work}
first runs a fixed loop (C{BENCH_WORK_ITERATIONS}, the CPU-bound variant),
C{/slow} first spends C{BENCH_SLOW_MS} (20) ms of the process's CPU time (the
uneven work).  Every process counts what it served and writes it to
C{BENCH_COUNTS_DIR}, if set, every 0.2 s (C{worker-PID.json}).

    python -m benchmarks.responder --port 8080 [--processes 2]

With C{--processes N}: N plain Twisted processes, each with its own
C{SO_REUSEPORT} socket on the port (no cluster: the reference for the
none/reuseport policies).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import LoopingCall

#: The worker id in every response (C{X-Worker}); 0 outside a cluster.
WORKER_ID = os.environ.get("TWISTCLUSTER_WORKER_ID", "0")
#: Iterations of L{work} per C{/work} request (~1 ms of CPython).
WORK_ITERATIONS = int(os.environ.get("BENCH_WORK_ITERATIONS", "16000"))
#: CPU time per C{/slow} request, in seconds.
SLOW_SECONDS = float(os.environ.get("BENCH_SLOW_MS", "20")) / 1000
#: A request head larger than this without its blank line is not HTTP.
MAX_HEAD = 64 * 1024
COUNTS_INTERVAL = 0.2
#: The listen backlog (Node's default), as every benchmarked server has.
BACKLOG = 511

BODY = b"Hello, World!\n"


def makeResponse(workerId: str, close: bool) -> bytes:
    """
    The fixed response; the same bytes as C{responder.js} sends.
    """
    connection = b"close" if close else b"keep-alive"
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nX-Worker: %s\r\nConnection: %s"
    )
    return head % (len(BODY), workerId.encode(), connection) + b"\r\n\r\n" + BODY


KEEP_ALIVE_RESPONSE = makeResponse(WORKER_ID, close=False)
CLOSE_RESPONSE = makeResponse(WORKER_ID, close=True)


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
    Spend C{seconds} of this process's CPU time (not a loop count: Node runs
    a loop 25 times faster; C{responder.js} does the same with
    C{process.cpuUsage()}).
    """
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


class Counters:
    """
    What this process served, written to C{BENCH_COUNTS_DIR} if set.
    """

    connections = 0
    requests = 0
    sink = 0

    @classmethod
    def write(cls, directory: Path) -> None:
        record = {
            "worker": WORKER_ID,
            "pid": os.getpid(),
            "connections": cls.connections,
            "requests": cls.requests,
        }
        target = directory / f"worker-{os.getpid()}.json"
        temporary = target.with_suffix(".tmp")
        temporary.write_text(json.dumps(record))
        temporary.replace(target)


class HTTPResponder(Protocol):
    """
    One connection: answer each complete request head with the fixed response.
    """

    _buffer = b""
    _closing = False

    def connectionMade(self) -> None:
        Counters.connections += 1

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        buffer = self._buffer + data if self._buffer else data
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            head = buffer[:end]
            buffer = buffer[end + 4 :]
            if not self._respond(head):
                return
        if len(buffer) > MAX_HEAD:
            self._closing = True
            self.transport.loseConnection()  # type: ignore[union-attr]
        self._buffer = buffer

    def _respond(self, head: bytes) -> bool:
        """
        Answer one request.

        @return: Whether the connection stays open.
        """
        Counters.requests += 1
        if head.startswith(b"GET /work"):
            Counters.sink ^= work(WORK_ITERATIONS)
        elif head.startswith(b"GET /slow"):
            spin(SLOW_SECONDS)
        if b"connection: close" in head.lower():
            self._closing = True
            self.transport.write(CLOSE_RESPONSE)  # type: ignore[union-attr]
            self.transport.loseConnection()  # type: ignore[union-attr]
            return False
        self.transport.write(KEEP_ALIVE_RESPONSE)  # type: ignore[union-attr]
        return True


class HTTPResponderFactory(Factory):
    """
    The responder's factory (C{twist cluster ... benchmarks.responder.HTTPResponderFactory}).
    """

    protocol = HTTPResponder
    noisy = False
    _reporter: LoopingCall | None = None

    def startFactory(self) -> None:
        directory = os.environ.get("BENCH_COUNTS_DIR")
        if directory:
            self._reporter = LoopingCall(Counters.write, Path(directory))
            self._reporter.start(COUNTS_INTERVAL, now=True)

    def stopFactory(self) -> None:
        if self._reporter is not None and self._reporter.running:
            self._reporter.stop()
            self._reporter.f(*self._reporter.a)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.responder")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--processes", type=int, default=1, help="plain processes, each its own SO_REUSEPORT")
    arguments = parser.parse_args(argv)
    if arguments.processes > 1:
        _forkReusePort(arguments.processes)
    from twisted.internet import reactor

    factory = HTTPResponderFactory()
    if arguments.processes > 1:
        port: Any = _listenReusePort(reactor, arguments.host, arguments.port, factory)
    else:
        port = reactor.listenTCP(  # type: ignore[attr-defined]
            arguments.port, factory, backlog=BACKLOG, interface=arguments.host
        )
    # One write, whole: the processes of --processes share this output.
    os.write(sys.stdout.fileno(), f"ready on {port.getHost().port}\n".encode())
    reactor.run()  # type: ignore[attr-defined]


def _forkReusePort(processes: int) -> None:
    """
    Fork C{processes} server processes, numbered as workers in their
    responses and counts, and return in each of them.  This process (like a
    master, but idle) only waits for them.
    """
    global WORKER_ID, KEEP_ALIVE_RESPONSE, CLOSE_RESPONSE
    children = []
    for number in range(1, processes + 1):
        child = os.fork()
        if child == 0:
            WORKER_ID = str(number)
            KEEP_ALIVE_RESPONSE = makeResponse(WORKER_ID, close=False)
            CLOSE_RESPONSE = makeResponse(WORKER_ID, close=True)
            return
        children.append(child)

    def stop(signum: int, frame: Any) -> None:
        for child in children:
            with suppress(ProcessLookupError):
                os.kill(child, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for child in children:
        os.waitpid(child, 0)
    raise SystemExit(0)


def _listenReusePort(reactor: Any, host: str, port: int, factory: Factory) -> Any:
    """
    Listen on a socket of this process's own that shares C{port} with the
    others' (the kernel spreads new connections over them).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listening:
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        listening.bind((host, port))
        listening.listen(BACKLOG)
        listening.setblocking(False)
        return reactor.adoptStreamPort(listening.fileno(), socket.AF_INET, factory)


if __name__ == "__main__":
    main()
