"""
Protocol factories that the integration tests run under `twist cluster`
(resolved as tests.clusterapps.NAME from the project root).
"""

import os
import sys
import time

from twisted.internet.protocol import DatagramProtocol, Factory, Protocol

WORKER_ID = os.environ.get("TWISTCLUSTER_WORKER_ID", "?")


class WhoAmI(Protocol):
    """
    Says which worker serves the connection, then echoes until closed.
    """

    def connectionMade(self) -> None:
        self.transport.write(f"worker={WORKER_ID} pid={os.getpid()}\n".encode())

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


class WhoAmIFactory(Factory):
    protocol = WhoAmI


class Chatty(Factory):
    """
    Tells on stdout and stderr when it starts and stops, so tests can see the
    relay and doStart/doStop at work.
    """

    protocol = WhoAmI

    def startFactory(self) -> None:
        print(f"factory started in worker {WORKER_ID}")
        sys.stderr.write(f"stderr line from worker {WORKER_ID}\n")

    def stopFactory(self) -> None:
        print(f"factory stopped in worker {WORKER_ID}")


class PeerAndWhoAmI(WhoAmI):
    """
    Also says, with each echo, who it thinks the client is: behind haproxy:,
    the PROXY header's address (known once the header has arrived, so not
    yet in connectionMade).
    """

    def dataReceived(self, data: bytes) -> None:
        peer = self.transport.getPeer()
        self.transport.write(f"peer={peer.host}:{peer.port} ".encode() + data)


class PeerAndWhoAmIFactory(Factory):
    protocol = PeerAndWhoAmI


class WhoAmIDatagram(DatagramProtocol):
    """
    Answers each datagram with the worker that read it, and the datagram.
    """

    def datagramReceived(self, data: bytes, address: tuple) -> None:
        self.transport.write(f"worker={WORKER_ID} pid={os.getpid()} ".encode() + data, address)


def makeWhoAmI() -> Factory:
    return WhoAmIFactory()


whoAmI = WhoAmIFactory()
notAFactory = 42


def brokenCallable() -> Factory:
    raise RuntimeError("no factory today")


class Troubled(Protocol):
    """
    WhoAmI, plus commands that get the worker into trouble: C{hang} (a busy
    loop in the event loop), C{spin} (one for 8 seconds, then the echo) and
    C{grow} (200 MiB more resident memory).
    """

    hoard: list = []

    def connectionMade(self) -> None:
        self.transport.write(f"worker={WORKER_ID} pid={os.getpid()}\n".encode())

    def dataReceived(self, data: bytes) -> None:
        if data.strip() == b"hang":
            while True:
                pass
        if data.strip() == b"spin":
            deadline = time.monotonic() + 8
            while time.monotonic() < deadline:
                pass
        if data.strip() == b"grow":
            self.hoard.append(b"x" * (200 << 20))
        self.transport.write(data)


class TroubledFactory(Factory):
    protocol = Troubled


class CannotStart(Factory):
    """
    Fine in the master, which only makes it; fails in every worker.
    """

    protocol = WhoAmI

    def startFactory(self) -> None:
        raise RuntimeError("boom: this factory never starts")


class Sizes(Protocol):
    """
    For each line C{N}, answers with C{N} bytes (a repeating pattern); for
    C{bye}, closes: what a worker's transport sends during reads and what
    must wait for the socket to drain.  For C{transport}, names its
    transport's class (a line).
    """

    _buffer = b""

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            if line == b"bye":
                self.transport.loseConnection()
                return
            if line == b"transport":
                self.transport.write(type(self.transport).__name__.encode() + b"\n")
                continue
            self.transport.write(pattern(int(line)))


def pattern(size: int) -> bytes:
    return (b"0123456789abcdef" * (size // 16 + 1))[:size]


class SizesFactory(Factory):
    protocol = Sizes


class CountingFactory(WhoAmIFactory):
    """
    WhoAmI, counting its connections on prometheus_client's default
    registry, as an application would (the --metrics tests).
    """

    def buildProtocol(self, addr):
        _connectionsCounter().inc()
        return super().buildProtocol(addr)


def _connectionsCounter():
    from prometheus_client import REGISTRY, Counter

    existing = REGISTRY._names_to_collectors.get("app_connections")
    return existing or Counter("app_connections", "Connections this worker served")
