"""
Continuous load from a real client: a few threads, each sending one HTTP/1.0
request per connection, in a loop, until stopped (or a bound in time and
count is reached).  Each request's outcome is kept: when it started and
ended, whether it succeeded, and who answered (C{tests.hostapps}: the host,
the worker, the client address the application saw).
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections import Counter

from attrs import frozen

#: The answer of tests.hostapps.
ANSWER = re.compile(rb"host=(\S+) worker=(\S+) client=(\S+)\n\Z")


@frozen
class Outcome:
    """
    One request.

    @ivar client: The client's own address (C{host:port}).
    @ivar seen: The client address the application saw (C{host:port}).
    @ivar error: Why it failed, or L{None}.
    """

    started: float
    ended: float
    client: str = ""
    host: str = ""
    worker: str = ""
    seen: str = ""
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def request(address: tuple[str, int], source: str, timeout: float, payload: bytes) -> Outcome:
    """
    One request on a new connection from C{source}.
    """
    started = time.monotonic()
    client = ""
    try:
        with socket.socket() as sock:
            sock.settimeout(timeout)
            sock.bind((source, 0))
            client = "{}:{}".format(*sock.getsockname()[:2])
            sock.connect(address)
            sock.sendall(payload)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
    except OSError as e:
        return Outcome(started, time.monotonic(), client, error=f"{type(e).__name__}: {e}")
    ended = time.monotonic()
    match = ANSWER.search(data.split(b"\r\n\r\n", 1)[-1])
    if match is None or payload.startswith(b"GET ") and not re.match(rb"HTTP/1\.[01] 200 ", data):
        return Outcome(started, ended, client, error=f"bad answer {data[:200]!r}")
    host, worker, seen = (part.decode() for part in match.groups())
    return Outcome(started, ended, client, host, worker, seen)


class Load:
    """
    C{clients} threads sending requests to C{address} until L{stop}.
    """

    def __init__(
        self,
        address: tuple[str, int],
        clients: int = 4,
        source: str = "127.0.0.2",
        timeout: float = 20.0,
        payload: bytes = b"GET / HTTP/1.0\r\n\r\n",
        maxSeconds: float = 120.0,
        maxRequests: int = 200_000,
    ) -> None:
        self._address = address
        self._source = source
        self._timeout = timeout
        self._payload = payload
        self._deadline = time.monotonic() + maxSeconds
        self._maxRequests = maxRequests
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self.outcomes: list[Outcome] = []
        self._threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(clients)]
        for thread in self._threads:
            thread.start()

    def _loop(self) -> None:
        while not self._stopped.is_set() and time.monotonic() < self._deadline:
            outcome = request(self._address, self._source, self._timeout, self._payload)
            with self._lock:
                self.outcomes.append(outcome)
                if len(self.outcomes) >= self._maxRequests:
                    self._stopped.set()

    def count(self) -> int:
        with self._lock:
            return len(self.outcomes)

    def waitFor(self, requests: int, timeout: float = 60.0) -> None:
        """
        Wait until C{requests} more requests have ended.
        """
        target = self.count() + requests
        deadline = time.monotonic() + timeout
        while self.count() < target:
            if time.monotonic() > deadline or self._stopped.is_set():
                raise AssertionError(f"only {self.count()} of {target} requests ended in {timeout}s")
            time.sleep(0.02)

    def stop(self) -> list[Outcome]:
        self._stopped.set()
        for thread in self._threads:
            thread.join(self._timeout + 5)
        with self._lock:
            return list(self.outcomes)


def shares(outcomes: list[Outcome]) -> Counter[str]:
    """
    How many of the successful requests each host answered.
    """
    return Counter(o.host for o in outcomes if o.ok)
