"""
Workers out of descriptors under rr and least-conn, for real: a cluster at a
low RLIMIT_NOFILE and a thousand idle clients.  The kernel drops the
descriptors passed to a full worker (MSG_CTRUNC); only those hand-offs are
refused, the channels stay in step, and service resumes as soon as clients
leave.
"""

from __future__ import annotations

import errno
import os
import re
import resource
import selectors
import socket
import sys
import time

import pytest

from tests._cluster import whoServes

LIMIT = 256
CLIENTS = 1000
#: Runs the master (which the workers inherit it from) at LIMIT, soft and hard.
LAUNCHER = [
    sys.executable,
    "-c",
    "import os, resource, sys;"
    f" resource.setrlimit(resource.RLIMIT_NOFILE, ({LIMIT}, {LIMIT}));"
    " os.execvp(sys.argv[1], sys.argv[1:])",
]


class IdleClients:
    """
    Clients that connect (without waiting for the handshake) and then only
    read: each one's greeting says which worker serves it.
    """

    def __init__(self, address: tuple[str, int], count: int) -> None:
        self.selector = selectors.DefaultSelector()
        self.greeted: dict[socket.socket, int] = {}
        self.waiting: set[socket.socket] = set()
        self._partial: dict[socket.socket, bytes] = {}
        for _ in range(count):
            sock = socket.socket()
            sock.setblocking(False)
            code = sock.connect_ex(address)
            assert code in (0, errno.EINPROGRESS), os.strerror(code)
            self.waiting.add(sock)
            self.selector.register(sock, selectors.EVENT_READ)

    def poll(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            for key, _ in self.selector.select(left):
                sock = key.fileobj
                try:
                    data = sock.recv(100)  # type: ignore[union-attr]
                except OSError:
                    data = b""
                if not data:
                    raise AssertionError(f"a client was disconnected: {sock}")
                line = self._partial.pop(sock, b"") + data  # type: ignore[arg-type]
                match = re.match(rb"worker=(\d+) ", line)
                if match is None:
                    self._partial[sock] = line  # type: ignore[index]
                    continue
                self.selector.unregister(sock)
                self.waiting.discard(sock)  # type: ignore[arg-type]
                self.greeted[sock] = int(match.group(1))  # type: ignore[index]

    def settle(self, quiet: float = 3.0, timeout: float = 60.0) -> int:
        """
        Read greetings until none came for C{quiet} seconds; how many there
        are.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            before = len(self.greeted)
            self.poll(quiet)
            if len(self.greeted) == before:
                break
        return len(self.greeted)

    def close(self, count: int | None = None) -> None:
        """
        Close C{count} of the greeted clients (all clients if None).
        """
        if count is None:
            for sock in [*self.greeted, *self.waiting]:
                sock.close()
            self.greeted.clear()
            self.waiting.clear()
            self.selector.close()
            return
        for sock in list(self.greeted)[:count]:
            del self.greeted[sock]
            sock.close()


@pytest.fixture
def manyDescriptors():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < CLIENTS + 500:
        pytest.skip(f"needs {CLIENTS + 500} open files for the clients (the hard limit is {hard})")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.timeout(240)
@pytest.mark.parametrize("policy", ["rr", "least-conn"])
def test_workers_out_of_descriptors_keep_serving(cluster, manyDescriptors, policy):
    """
    Two workers at 256 descriptors each and a thousand idle clients: both
    workers fill up (about 240 clients each), the rest wait in the master's
    queue and the kernel's backlog; every worker keeps its channel (no
    traceback, no exit); once 300 served clients leave, 300 waiting ones
    are served in their place; once all leave, a new client is served by
    the same two workers.  The master and workers log their limit.
    """
    c = cluster(
        "--workers",
        "2",
        "--scheduling",
        policy,
        "--listen",
        "tcp:0:interface=127.0.0.1",
        "tests.clusterapps.WhoAmIFactory",
        launcher=LAUNCHER,
    )
    pids = c.waitReady(2)
    c.waitFor(rf"worker 1: open files limit {LIMIT}$")
    clients = IdleClients(c.address(), CLIENTS)
    try:
        full = clients.settle()
        print(f"greeted with every worker full: {full}")
        # Both workers full: each serves about LIMIT, less what it needs itself.
        perWorker = {w: list(clients.greeted.values()).count(w) for w in pids}
        assert all(LIMIT // 2 < n < LIMIT for n in perWorker.values()), perWorker
        # Clients leave: as many as there were are served in their place.
        clients.close(300)
        served = clients.settle()
        print(f"greeted after 300 left: {served}")
        assert served >= full - 300 + 250, (full, served)
        c.waitFor(r"worker [12] is out of descriptors \(limit 256\)")
        assert c.matches(r"worker [12] is out of descriptors: .* hands what it cannot take to other workers")
        clients.close()
        assert whoServes(c.address())[0] in pids
        assert c.waitReady(2) == pids
    finally:
        clients.close()
    lines = c.output.splitlines()
    assert not [
        line for line in lines if re.search(r"Traceback|closed its control channel|exited with", line)
    ]
    # Out of descriptors is said a few times, not once per connection.
    assert len(c.matches(r"out of descriptors")) < 20
