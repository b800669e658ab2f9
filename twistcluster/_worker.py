# -*- test-case-name: tests.test_worker -*-
"""
The worker process: C{python -m twistcluster._worker ...}.

It adopts its end of the control channel (fd 3), tells the master it is
online, listens through the master on every endpoint it was given, and
serves the connections the master hands it.  It exits when the master tells
it to (after finishing its open connections) or when the control channel
closes (a master killed with SIGKILL leaves no orphans).
"""

from __future__ import annotations

import argparse
import faulthandler
import os
import signal
import socket
import sys
from typing import Any, Sequence

from twisted.internet.defer import Deferred, FirstError, gatherResults
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols import amp
from twisted.python.failure import Failure

from ._endpoints import ListenSpec, isDatagram
from ._factory import loadDatagramProtocols, loadFactory
from ._listening import ClusterPort, ClusterReactor, listenOn
from ._protocol import (
    CONTROL_FD,
    Close,
    ConnectionsClosed,
    ControlChannel,
    Disconnect,
    Listening,
    NewConn,
    Online,
    Ping,
    QueryServer,
)


#: A worker's exit status when it could not start serving.
BOOT_FAILED = 3


class WorkerControl(ControlChannel):
    """
    The worker's end of the control channel.
    """

    _log = Logger()

    def __init__(self, runtime: WorkerRuntime) -> None:
        super().__init__()
        self._runtime = runtime

    @NewConn.responder
    def newConn(self, key: str, fds: list[int]) -> dict[str, list[bool]]:
        port = self._runtime.ports.get(key)
        accepted = []
        for fd in fds:
            try:
                accepted.append(port is not None and port.connectionReceived(fd))
            except Exception:
                self._log.failure("could not serve a connection for {key}", key=key)
                accepted.append(False)
            finally:
                os.close(fd)
        return {"accepted": accepted}

    @Disconnect.responder
    def disconnect(self) -> dict[str, Any]:
        self._runtime.disconnect()
        return {}

    @Ping.responder
    def ping(self) -> dict[str, Any]:
        return {}

    def connectionLost(self, reason: Failure) -> None:
        self._runtime.controlLost()
        super().connectionLost(reason)


class ClosedConnectionReports:
    """
    Tells the master, in batches, how many of the connections it handed
    over have ended: at most one C{ConnectionsClosed} per key every
    C{interval} seconds, so a connection's end costs a counter increment.
    """

    def __init__(self, clock: IReactorTime, send: Any, interval: float = 0.05) -> None:
        self._clock = clock
        self._send = send
        self.interval = interval
        self._counts: dict[str, int] = {}
        self._pending: IDelayedCall | None = None

    def closed(self, key: str) -> None:
        self._counts[key] = self._counts.get(key, 0) + 1
        if self._pending is None:
            self._pending = self._clock.callLater(self.interval, self.flush)

    def flush(self) -> None:
        if self._pending is not None and self._pending.active():
            self._pending.cancel()
        self._pending = None
        counts, self._counts = self._counts, {}
        for key, count in counts.items():
            self._send(ConnectionsClosed, key=key, count=count)


class WorkerRuntime:
    """
    One worker's life: online, listening through the master, serving, and
    draining on the way out.

    @ivar ports: The worker's granted listens, by the master's handle key.
    """

    _log = Logger()

    def __init__(
        self,
        reactor: Any,
        workerId: int,
        factoryName: str,
        descriptions: Sequence[str],
        shutdownTimeout: float,
        controlFD: int = CONTROL_FD,
    ) -> None:
        self._reactor = reactor
        self._controlFD = controlFD
        self._workerId = workerId
        self._factoryName = factoryName
        self._descriptions = list(descriptions)
        self._shutdownTimeout = shutdownTimeout
        self._control: WorkerControl | None = None
        self._connected = False
        self._disconnecting = False
        self._connections: set[Any] = set()
        self._drained: Deferred[None] | None = None
        self._allPorts: list[ClusterPort] = []
        self.ports: dict[str, ClusterPort] = {}
        self._closedReports = ClosedConnectionReports(reactor, self._send)
        self._done: Deferred[None] = Deferred()

    def run(self) -> Deferred[None]:
        """
        Start the worker.

        @return: Fires when the worker should exit; fails if it could not
            start serving.
        """
        self._control = WorkerControl(self)
        self._reactor.adoptStreamConnection(
            self._controlFD, socket.AF_UNIX, Factory.forProtocol(lambda: self._control)
        )
        os.close(self._controlFD)
        self._connected = True
        self._send(Online, workerId=self._workerId, pid=os.getpid())
        try:
            self._listenAll()
        except Exception:
            self._couldNotStart(Failure())
        return self._done

    def _listenAll(self) -> None:
        clusterReactor = ClusterReactor(self._reactor, self)
        listening = [
            listenOn(clusterReactor, description, serving).addCallback(self._startedListening)
            for description, serving in zip(self._descriptions, self._loadServing())
        ]
        gatherResults(listening, consumeErrors=True).addCallbacks(
            self._ready, self._couldNotStart
        )

    def _loadServing(self) -> list[Any]:
        """
        What serves each listen: the user's factory, or for udp: endpoints
        a datagram protocol each.
        """
        if self._descriptions and all(map(isDatagram, self._descriptions)):
            return list(loadDatagramProtocols(self._factoryName, len(self._descriptions)))
        return [loadFactory(self._factoryName)] * len(self._descriptions)

    def _startedListening(self, port: ClusterPort) -> Deferred[ClusterPort]:
        self._allPorts.append(port)
        return port.whenListening()

    def _ready(self, ports: list[ClusterPort]) -> None:
        self._log.info(
            "worker {workerId} serving {factory} on {keys} ({reactor})",
            workerId=self._workerId,
            factory=self._factoryName,
            keys=", ".join(p.key or "?" for p in ports),
            reactor=type(self._reactor).__name__,
        )

    def _couldNotStart(self, reason: Failure) -> None:
        if isinstance(reason.value, FirstError):
            reason = reason.value.subFailure
        self._log.failure(
            "worker {workerId} could not start: {error}",
            reason,
            workerId=self._workerId,
            error=f"{reason.type.__name__}: {reason.getErrorMessage()}",
        )
        if not self._done.called:
            # Exit non-zero without task.react logging it a second time.
            self._done.errback(SystemExit(BOOT_FAILED))

    # MasterChannel, for the worker's cluster ports

    def queryServer(self, spec: ListenSpec, index: int) -> Deferred[dict[str, Any]]:
        assert self._control is not None
        return self._control.callRemote(QueryServer, spec=spec.toJSON(), index=index)

    def portListening(self, port: ClusterPort) -> None:
        assert port.key is not None
        self.ports[port.key] = port
        self._send(Listening, key=port.key, address=port.sockname)

    def portClosed(self, port: ClusterPort) -> None:
        assert port.key is not None
        if self.ports.get(port.key) is port:
            del self.ports[port.key]
        self._send(Close, key=port.key)

    def connectionOpened(self, port: ClusterPort, protocol: Any) -> None:
        # Twisted gives no hook for a connection's end, and a protocol
        # wrapper would cost every dataReceived call: wrap the protocol's
        # own connectionLost instead.
        self._connections.add(protocol)
        lost = protocol.connectionLost

        def connectionLost(reason: Failure) -> None:
            self._connections.discard(protocol)
            try:
                lost(reason)
            finally:
                if port.reportClosed and port.key is not None:
                    self._closedReports.closed(port.key)
                if self._drained is not None and not self._connections:
                    self._drained.callback(None)

        protocol.connectionLost = connectionLost

    def _send(self, command: type[amp.Command], **arguments: Any) -> None:
        if self._connected and self._control is not None:
            self._control.callRemote(command, **arguments)

    # Leaving

    def disconnect(self) -> None:
        """
        Close every server, let open connections finish (up to the shutdown
        timeout), then exit.
        """
        if self._disconnecting:
            return
        self._disconnecting = True
        # A port on a socket the worker adopted closes on the next turn.
        closed = gatherResults([port.stopListening() for port in self._allPorts])
        self._log.info(
            "worker {workerId} closing; {count} connections open",
            workerId=self._workerId,
            count=len(self._connections),
        )
        if not self._connections:
            closed.addBoth(lambda _: self._finish())
            return
        self._drained = Deferred()
        self._drained.addTimeout(self._shutdownTimeout, self._reactor, lambda *a: None)
        self._drained.addBoth(lambda _: closed).addBoth(lambda _: self._finish())

    def controlLost(self) -> None:
        self._connected = False
        if not self._disconnecting:
            self._log.warn(
                "worker {workerId}: the master went away; finishing open connections",
                workerId=self._workerId,
            )
        self.disconnect()

    def _finish(self) -> None:
        self._closedReports.flush()
        if self._control is not None and self._connected:
            self._control.transport.loseConnection()  # type: ignore[union-attr]
        if not self._done.called:
            self._done.callback(None)


def _parseArguments(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m twistcluster._worker")
    parser.add_argument("--reactor", default=None)
    parser.add_argument("--factory", required=True)
    parser.add_argument("--listen", action="append", default=[])
    parser.add_argument("--shutdown-timeout", type=float, default=30.0)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    # Ctrl-C reaches the whole process group; the master alone orchestrates.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A hung worker is killed with SIGABRT first: leave a traceback behind.
    faulthandler.enable()
    arguments = _parseArguments(sys.argv[1:] if argv is None else argv)
    if arguments.reactor:
        from twisted.application.reactors import installReactor

        installReactor(arguments.reactor)
    from twisted.internet import task
    from twisted.logger import globalLogBeginner, jsonFileLogObserver

    globalLogBeginner.beginLoggingTo(
        [jsonFileLogObserver(sys.stderr)], redirectStandardIO=False
    )
    workerId = int(os.environ["TWISTCLUSTER_WORKER_ID"])

    def run(reactor: Any) -> Deferred[None]:
        runtime = WorkerRuntime(
            reactor,
            workerId,
            arguments.factory,
            arguments.listen,
            arguments.shutdown_timeout,
        )
        # A SIGTERM sent to the worker itself (systemd signals the whole
        # control group) drains like a disconnect instead of dropping
        # connections.  Installed once running, to replace the reactor's.
        reactor.callWhenRunning(
            signal.signal,
            signal.SIGTERM,
            lambda signum, frame: reactor.callFromThread(runtime.disconnect),
        )
        return runtime.run()

    task.react(run)


if __name__ == "__main__":
    main()
