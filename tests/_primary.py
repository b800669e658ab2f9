"""
A primary in the test process (a real PrimaryCluster on the real reactor,
forking real workers that run tests/nodeworker.py), and a recorder of its
events that tests wait on.  Every wait has a deadline; every worker is killed
at teardown.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks, succeed
from twisted.internet.task import deferLater

from twistcluster import PrimaryCluster

WORKER = str(Path(__file__).with_name("nodeworker.py"))
TIMEOUT = 20.0


class Recorder:
    """
    Every event a primary emits, in order; L{wait} fires on the n-th one
    that matches, whether it already happened or not.
    """

    NAMES = ("fork", "online", "listening", "disconnect", "exit", "message", "setup")

    def __init__(self, primary: PrimaryCluster, reactor: Any) -> None:
        self.events: list[tuple[str, tuple[Any, ...]]] = []
        self._reactor = reactor
        self._waiting: list[tuple[str, Callable[..., bool], int, Deferred[Any]]] = []
        for name in self.NAMES:
            primary.on(name, lambda *args, name=name: self.record(name, *args))

    def record(self, name: str, *args: Any) -> None:
        self.events.append((name, args))
        for entry in list(self._waiting):
            if self._count(*entry[:2]) >= entry[2]:
                self._waiting.remove(entry)
                entry[3].callback(self._matching(*entry[:2])[entry[2] - 1])

    def _matching(self, name: str, match: Callable[..., bool]) -> list[tuple[Any, ...]]:
        return [args for n, args in self.events if n == name and match(*args)]

    def _count(self, name: str, match: Callable[..., bool]) -> int:
        return len(self._matching(name, match))

    def names(self, *names: str) -> list[str]:
        return [n for n, _ in self.events if not names or n in names]

    def wait(self, name: str, match: Callable[..., bool] = lambda *a: True, count: int = 1) -> Deferred[Any]:
        """
        Fires with the arguments of the C{count}-th C{name} event for which
        C{match(*arguments)} is true.
        """
        found = self._matching(name, match)
        if len(found) >= count:
            return succeed(found[count - 1])
        waiter: Deferred[Any] = Deferred()
        self._waiting.append((name, match, count, waiter))
        return waiter.addTimeout(TIMEOUT, self._reactor)

    def message(self, worker: Any, event: str, count: int = 1) -> Deferred[dict[str, Any]]:
        """
        Fires with the C{count}-th message C{{"event": event, ...}} from
        C{worker}.
        """
        d = self.wait("message", lambda w, m: w is worker and m.get("event") == event, count)
        return d.addCallback(lambda args: args[1])


def waitUntil(reactor: Any, predicate: Callable[[], object], what: str) -> Deferred[None]:
    """
    Check C{predicate} on every turn of the reactor (briefly) until it holds.
    """

    @inlineCallbacks
    def poll() -> Any:
        for _ in range(int(TIMEOUT / 0.01)):
            if predicate():
                return
            yield deferLater(reactor, 0.01, lambda: None)
        raise AssertionError(f"timed out waiting for {what}")

    return poll()


def processGone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as status:
            return "State:\tZ" in status.read()
    except FileNotFoundError:
        return True


@inlineCallbacks
def _cleanUp(primary: PrimaryCluster, forked: list[Any], reactor: Any) -> Any:
    for worker in forked:
        worker.kill("SIGKILL")
    exits = [w.whenExited().addTimeout(TIMEOUT, reactor) for w in forked]
    yield DeferredList(exits, consumeErrors=True)
    yield primary.disconnect().addTimeout(TIMEOUT, reactor)
    primary._forget()


@pytest.fixture
def makePrimary():
    """
    Make primaries (PrimaryCluster) in this process, forking
    tests/nodeworker.py; each comes with a C{recorder}.  At teardown every
    worker they forked is killed and waited for.
    """
    from twisted.internet import reactor

    made: list[tuple[PrimaryCluster, list[Any]]] = []

    def make() -> PrimaryCluster:
        primary = PrimaryCluster(reactor, environ={}, argv=[WORKER])
        primary.recorder = Recorder(primary, reactor)  # type: ignore[attr-defined]
        forked: list[Any] = []
        fork = primary.fork

        def forkAndKeep(env: Any = None) -> Any:
            worker = fork(env)
            forked.append(worker)
            return worker

        primary.fork = forkAndKeep  # type: ignore[method-assign]
        made.append((primary, forked))
        return primary

    yield make
    for primary, forked in made:
        pytest_twisted.blockon(_cleanUp(primary, forked, reactor))


@pytest.fixture
def primary(makePrimary):
    return makePrimary()


def freePort() -> int:
    """
    A TCP port free at the moment (for the Node tests that use a fixed port),
    below the kernel's ephemeral range: a port of that range is what every
    other process's C{connect()} and C{bind(0)} may take before the test
    binds it (a benchmark's thousands of client connections, another suite).
    """
    import random
    import socket

    with open("/proc/sys/net/ipv4/ip_local_port_range") as ports:
        low = int(ports.read().split()[0])
    for port in random.sample(range(max(1024, low - 12000), low), 200):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")
