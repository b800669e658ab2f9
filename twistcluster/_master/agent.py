# -*- test-case-name: tests.test_agent -*-
"""
HAProxy's agent check (C{--agent ENDPOINT}): the master tells a load balancer
how much traffic this host should get.

HAProxy connects to the agent port every C{agent-inter} and reads one line
(HAProxy's configuration manual, "agent-check").  The master answers and
closes:

  - C{up ready N%}: N is 100 x the ready workers / the C{--workers} the master
    was started with, at most 100 (a host that lost half its workers, or was
    scaled down to half, gets half its share).  C{up} brings a server back
    from C{down}, C{ready} from C{drain}: HAProxy only lets the agent undo
    what the agent did, so every answer says both;
  - C{drain} while the master drains or stops (C{--drain-delay}): no new
    connections, the ones open go on;
  - C{down} when no worker is ready.

HAProxy applies N% to the server's configured C{weight} in whole numbers, so
the server line needs C{weight 100} (50% of the default weight 1 is 0, a
drain), and a dynamic C{balance} such as C{roundrobin} or C{leastconn}
(static ones only take 0% and 100%).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from .._common.reactors import IEndpointReactor
from .carried import carriable


def agentReply(stopping: bool, ready: int, workers: int) -> bytes:
    """
    The agent-check line for a master (C{stopping}: draining or stopping)
    with C{ready} workers listening, started with C{workers}.
    """
    if stopping:
        return b"drain\n"
    if ready <= 0:
        return b"down\n"
    # At least 1%: a host with a ready worker is never drained by rounding.
    percent = max(1, min(100, 100 * ready // max(workers, 1)))
    return b"up ready %d%%\n" % (percent,)


class AgentCheck(Protocol):
    """
    One agent check: the answer as soon as HAProxy connects (it may send an
    C{agent-send} string first; nothing here depends on it), then close.
    """

    def __init__(self, reply: bytes) -> None:
        self._reply = reply

    def connectionMade(self) -> None:
        transport = self.transport
        assert transport is not None
        transport.write(self._reply)
        transport.loseConnection()


class AgentFactory(Factory):
    """
    Answers agent checks from the master's phase and workers, read at each check.

    @ivar _stopping: Whether a stop was asked of the master (it is draining
        or stopping).
    @ivar _ready: How many workers are ready now.
    @ivar _workers: The C{--workers} the master was started with.
    """

    noisy = False

    def __init__(self, stopping: Callable[[], bool], ready: Callable[[], int], workers: int) -> None:
        self._stopping = stopping
        self._ready = ready
        self._workers = workers

    def reply(self) -> bytes:
        return agentReply(self._stopping(), self._ready(), self._workers)

    def buildProtocol(self, addr: Any) -> AgentCheck:
        check = AgentCheck(self.reply())
        check.factory = self
        return check


def _describe(address: Any) -> str:
    if hasattr(address, "port"):
        return f"{address.host}:{address.port}"
    return str(getattr(address, "name", address))


class AgentService(Service):
    """
    Listens for agent checks on an endpoint, from the master's start to its
    stop.  (HAProxy counts an agent it cannot reach as no news: the server
    keeps the last state the agent gave it, and its health check decides.)
    """

    _log = Logger()
    name = "agent"

    def __init__(
        self,
        reactor: IEndpointReactor,
        description: str,
        factory: AgentFactory,
        failed: Callable[[str], object],
        upgrade: Any = None,
    ) -> None:
        """
        @param description: A Twisted server endpoint string.
        @param failed: Called with a one-line reason if it cannot listen.
        @param upgrade: The master's upgrade
            (L{twistcluster._master.upgrade.MasterUpgrade}): a plain TCP or
            UNIX endpoint's socket is carried across it.
        """
        self._reactor = reactor
        self._description = description
        self._factory = factory
        self._failed = failed
        self._port: IListeningPort | None = None
        self._upgrade = upgrade
        if upgrade is not None and carriable(description):
            upgrade.carryListener(self.name, lambda: None if self._port is None else self._port.fileno())

    def startService(self) -> None:
        super().startService()
        adopted = None if self._upgrade is None else self._upgrade.adoptedListener(self.name)
        if adopted is not None:
            from .resume import adoptListeningPort

            self._port = adoptListeningPort(self._reactor, adopted, self._factory)
            self._log.info("agent checks on {description} (adopted)", description=self._description)
            return
        try:
            endpoint = serverFromString(self._reactor, self._description)
        except Exception as e:
            self._failed(f"--agent {self._description!r}: {e}")
            return
        # Stream endpoints listen at once: a failure is known now, before the
        # master binds anything or starts a worker, and is reported outside
        # the Deferred (the handler may raise SystemExit).
        outcome: list[Any] = []
        endpoint.listen(self._factory).addBoth(outcome.append)
        if outcome and isinstance(outcome[0], Failure):
            error = getattr(outcome[0].value, "socketError", None) or outcome[0].value
            text = getattr(error, "strerror", None) or str(error)
            self._failed(f"cannot listen on --agent {self._description!r}: {text}")
        elif outcome:
            self._port = outcome[0]
            self._log.info(
                "agent checks on {description} at {address}",
                description=self._description,
                address=_describe(outcome[0].getHost()),
            )

    def stopService(self) -> Any:
        super().stopService()
        if self._port is not None:
            port, self._port = self._port, None
            return port.stopListening()
        return None
