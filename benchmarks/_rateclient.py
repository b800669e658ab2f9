"""
A constant-rate (open-loop) HTTP client for the uneven-work phases (Debian
has no wrk2)::

    python -m benchmarks._rateclient PORT RATE SECONDS [--keep-alive N] [--slow-share F]

Request i is due at start + i / RATE whatever became of the earlier ones, and
its latency runs from that due time to the end of its response: a server
that stalls is charged for every request it kept waiting, not only for the
few a closed-loop client has in flight (no coordinated omission).  Each
request opens a connection of its own (C{Connection: close}), or with
C{--keep-alive N} goes to the next of N connections, pipelined behind any
response still due there.  A seeded draw, the same for every configuration,
sends a share of them to C{/slow} (20 ms of the responder's CPU).

From each response's C{X-Worker} it counts the cheap requests sent to a
worker busy with a slow one (between that one's send and its response), and
those of them sent while another worker was not: what a balancer that knew
would have avoided.  It prints one line, C{BENCH_RESULT} and JSON, as
C{wrk_report.lua} does.
"""

from __future__ import annotations

import argparse
import bisect
import errno
import gc
import json
import random
import re
import select
import socket
import time
from collections import Counter, defaultdict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field

#: How long after the last due time the last responses may take.
GRACE = 5.0
_CONTENT_LENGTH = re.compile(rb"(?i)content-length: *(\d+)")
_WORKER = re.compile(rb"X-Worker: *(\S+)")
PERCENTILES = (("50", 0.5), ("99", 0.99), ("999", 0.999))


@dataclass(slots=True)
class Request:
    due: float
    slow: bool
    sent: float = 0.0
    done: float = 0.0
    worker: str = ""


@dataclass(slots=True)
class Connection:
    sock: socket.socket
    pending: deque[Request] = field(default_factory=deque)
    unsent: bytes = b""
    received: bytes = b""
    mask: int = 0


class RateClient:
    """
    Sends L{requests} to 127.0.0.1:C{port} on their timetable.
    """

    def __init__(self, port: int, rate: float, seconds: float, keepAlive: int, slowShare: float) -> None:
        draw = random.Random(1)
        self.requests = [Request(i / rate, draw.random() < slowShare) for i in range(int(rate * seconds))]
        self.errors: Counter[str] = Counter()
        self._port, self._seconds, self._keepAlive = port, seconds, keepAlive
        self._epoll = select.epoll()
        self._open: dict[int, Connection] = {}
        self._outstanding = 0
        self._shared = [self._connect() for _ in range(keepAlive)]
        close = b"" if keepAlive else b"Connection: close\r\n"
        self._bytes = {s: b"GET /%s HTTP/1.1\r\nHost: bench\r\n%s\r\n" % (b"slow" * s, close) for s in (0, 1)}

    def _connect(self) -> Connection:
        sock = socket.socket()
        sock.setblocking(False)
        code = sock.connect_ex(("127.0.0.1", self._port))
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            raise ConnectionRefusedError(code, "connect")
        connection = self._open[sock.fileno()] = Connection(sock)
        self._epoll.register(sock.fileno(), 0)
        return connection

    def run(self) -> None:
        start = time.monotonic()
        for request in self.requests:
            request.due += start
        end, due = start + self._seconds + GRACE, 0
        while True:
            now = time.monotonic()
            while due < len(self.requests) and self.requests[due].due <= now:
                self._send(due, now)
                due += 1
            if now >= end or (due == len(self.requests) and not self._outstanding):
                break
            wake = self.requests[due].due if due < len(self.requests) else end
            for fd, events in self._epoll.poll(max(0.0, wake - now)):
                if connection := self._open.get(fd):
                    self._ready(connection, events)
        if self._outstanding:
            self.errors["timeout"] += self._outstanding

    def _send(self, index: int, now: float) -> None:
        request = self.requests[index]
        request.sent = now
        try:
            if not self._keepAlive:
                connection = self._connect()
            elif self._shared:
                connection = self._shared[index % len(self._shared)]
            else:
                raise ConnectionResetError("every keep-alive connection is gone")
        except OSError:
            self.errors["connect"] += 1
            return
        connection.pending.append(request)
        self._outstanding += 1
        connection.unsent += self._bytes[request.slow]
        self._ready(connection, select.EPOLLOUT)

    def _ready(self, connection: Connection, events: int) -> None:
        try:
            if connection.unsent and events & (select.EPOLLOUT | select.EPOLLERR):
                connection.unsent = connection.unsent[connection.sock.send(connection.unsent) :]
            if events & (select.EPOLLIN | select.EPOLLERR | select.EPOLLHUP):
                self._read(connection)
        except BlockingIOError:
            pass
        except OSError as e:
            return self._drop(connection, "connect" if isinstance(e, ConnectionRefusedError) else "read")
        mask = select.EPOLLIN | (select.EPOLLOUT if connection.unsent else 0)
        if connection.sock.fileno() >= 0 and mask != connection.mask:
            self._epoll.modify(connection.sock, mask)
            connection.mask = mask

    def _read(self, connection: Connection) -> None:
        data = connection.sock.recv(65536)
        if not data:
            raise ConnectionResetError("closed")
        now, received = time.monotonic(), connection.received + data
        while connection.pending and (end := received.find(b"\r\n\r\n")) >= 0:
            head, length = received[:end], _CONTENT_LENGTH.search(received[:end])
            total = end + 4 + (int(length.group(1)) if length else 0)
            if len(received) < total:
                break
            received = received[total:]
            request = connection.pending.popleft()
            self._outstanding -= 1
            if not head.startswith(b"HTTP/1.1 200 "):
                self.errors["status"] += 1
                continue
            worker = _WORKER.search(head)
            request.done, request.worker = now, worker.group(1).decode() if worker else "?"
        connection.received = received
        if not self._keepAlive and not connection.pending:
            self._close(connection)

    def _drop(self, connection: Connection, kind: str) -> None:
        self.errors[kind] += len(connection.pending)
        self._outstanding -= len(connection.pending)
        connection.pending.clear()
        self._close(connection)
        if connection in self._shared:
            self._shared.remove(connection)

    def _close(self, connection: Connection) -> None:
        self._open.pop(connection.sock.fileno(), None)
        connection.sock.close()

    def summary(self) -> dict[str, object]:
        """
        The result line's fields: wrk's (in microseconds), and C{uneven} (ms).
        """
        done = [r for r in self.requests if r.done]
        latencies = sorted(r.done - r.due for r in done)
        cheap = sorted(r.done - r.due for r in done if not r.slow)
        toBusy, whileIdle = busyHandOffs(done)
        uneven = {
            "cheap": len(cheap),
            "slow": len(done) - len(cheap),
            "cheapP99": percentile(cheap, 0.99) * 1e3,
            "toBusy": toBusy,
            "toBusyWhileIdle": whileIdle,
            "lagP99": percentile(sorted(r.sent - r.due for r in self.requests if r.sent), 0.99) * 1e3,
            "workers": dict(sorted(Counter(r.worker for r in done).items())),
        }
        result: dict[str, object] = {"requests": len(done), "duration_us": self._seconds * 1e6}
        result.update({f"p{name}_us": percentile(latencies, f) * 1e6 for name, f in PERCENTILES})
        return {**result, "errors": dict(self.errors), "uneven": uneven}


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """
    The C{fraction} (0..1) percentile of sorted values, by nearest rank.
    """
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))] if ordered else 0.0


def busyHandOffs(done: Sequence[Request]) -> tuple[int, int]:
    """
    Of the cheap requests in C{done}, how many were sent to a worker busy
    with a slow request (from its send to its response), and how many of
    those while another worker was not.
    """
    spans: dict[str, list[list[float]]] = defaultdict(list)
    for request in sorted((r for r in done if r.slow), key=lambda r: r.sent):
        merged = spans[request.worker]
        if merged and request.sent <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], request.done)
        else:
            merged.append([request.sent, request.done])
    starts = {worker: [start for start, _ in merged] for worker, merged in spans.items()}

    def busy(worker: str, moment: float) -> bool:
        index = bisect.bisect_right(starts.get(worker, []), moment) - 1
        return index >= 0 and moment < spans[worker][index][1]

    workers = {r.worker for r in done}
    toBusy = whileIdle = 0
    for request in done:
        if not request.slow and busy(request.worker, request.sent):
            toBusy += 1
            whileIdle += any(not busy(w, request.sent) for w in workers - {request.worker})
    return toBusy, whileIdle


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks._rateclient")
    add = parser.add_argument
    add("port", type=int)
    add("rate", type=float, help="requests per second")
    add("seconds", type=float)
    add("--keep-alive", dest="keepAlive", type=int, default=0, metavar="N", help="connections [0: one each]")
    add("--slow-share", dest="slowShare", type=float, default=0.05, help="share of requests to /slow [0.05]")
    client = RateClient(**vars(parser.parse_args(argv)))
    gc.disable()  # no collector pause in the middle of the timetable
    client.run()
    print("BENCH_RESULT " + json.dumps(client.summary()), flush=True)


if __name__ == "__main__":
    main()
