"""
Test applications for the production-service tests (tests.serviceapps.NAME,
from the project root).

Imported in the master too (FACTORY is checked there): L{stallHook} then
gives tests a way to stall the master's reactor, which no real option does.
"""

from __future__ import annotations

import json
import os
import time

from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger

WORKER_ID = os.environ.get("TWISTCLUSTER_WORKER_ID")
#: A file whose appearance stalls the master's reactor for as many seconds
#: as it says (then it is removed).
STALL_FILE = "TWISTCLUSTER_TEST_STALL_FILE"
#: The variables a worker must never see.
MASTER_ONLY = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")


class Greeting(Protocol):
    """
    Says which worker serves, which of the master-only variables it sees,
    and its uid/gid; logs each line the client sends (so tests can count
    log lines); echoes.
    """

    _log = Logger()

    def connectionMade(self) -> None:
        seen = sorted(name for name in MASTER_ONLY if name in os.environ)
        report = {
            "worker": WORKER_ID,
            "pid": os.getpid(),
            "seen": seen,
            "uid": os.getuid(),
            "gid": os.getgid(),
        }
        self.transport.write(json.dumps(report).encode() + b"\n")

    def dataReceived(self, data: bytes) -> None:
        for line in data.decode().splitlines():
            self._log.info("client said {line}", line=line)
        self.transport.write(data)


class GreetingFactory(Factory):
    protocol = Greeting


def stallHook() -> None:
    """
    In the master: check for the stall file every 50 ms, and when it
    appears, block the reactor thread (a stuck event loop) for the seconds
    it names.
    """
    path = os.environ.get(STALL_FILE)
    if WORKER_ID is not None or not path:
        return
    from twisted.internet import reactor
    from twisted.internet.task import LoopingCall

    def check() -> None:
        try:
            with open(path) as f:
                seconds = float(f.read() or 0)
        except (OSError, ValueError):
            return
        os.unlink(path)
        time.sleep(seconds)

    reactor.callWhenRunning(LoopingCall(check).start, 0.05)


stallHook()
