# -*- test-case-name: tests.test_cluster_api, tests.test_node_lifecycle -*-
"""
The face of a worker that users see in the primary, as Node's C{Worker}:
its events (C{online}, C{listening}, C{disconnect}, C{exit}, C{message}),
their Deferred forms, C{send}, and C{process}.

The master's L{twistcluster._master.worker.Worker} mixes this in; its lifecycle
calls L{WorkerAPI._announce} at each transition.
"""

from __future__ import annotations

import signal as _signal
from collections.abc import Callable
from typing import Any

from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import IProcessTransport

from .._common.events import EventEmitter, Latch
from .._common.messages import encodeMessage
from .._common.protocol import ControlChannel


@frozen
class ListeningAddress:
    """
    Where a worker listens, as Node's C{'listening'} event reports it.

    @ivar address: The bound interface, or a UNIX socket's path.
    @ivar port: The bound port (the kernel's choice for port 0); -1 for UNIX.
    @ivar addressType: 4, 6, or -1 for a UNIX socket.
    @ivar fd: Always L{None} (Node's C{listen({fd})} has no equivalent).
    """

    address: str
    port: int
    addressType: int
    fd: None = None

    @classmethod
    def fromSockname(cls, sockname: dict[str, Any]) -> ListeningAddress:
        return cls(sockname["address"], sockname["port"], sockname["addressType"])


class WorkerGone(Exception):
    """
    The worker exited before the event a Deferred was waiting for.
    """


def toSignal(value: str | int) -> _signal.Signals:
    """
    A signal given as Node does (C{"SIGKILL"}), as Twisted does (C{"KILL"}),
    or as a number.

    @raise ValueError: No such signal.
    """
    if isinstance(value, int):
        return _signal.Signals(value)
    name = value.upper()
    try:
        return _signal.Signals[name if name.startswith("SIG") else "SIG" + name]
    except KeyError:
        raise ValueError(f"no such signal: {value!r}") from None


class ChildProcess:
    """
    A worker's process in the primary (Node's C{ChildProcess}): its pid stays
    known after the process is gone, unlike a Twisted process transport's.

    @ivar pid: The process id.
    @ivar exitCode: The exit status, once it exited normally.
    @ivar signalCode: The signal that ended it, if one did.
    """

    def __init__(self, transport: IProcessTransport, control: ControlChannel | None) -> None:
        self.transport = transport
        self.pid: int = transport.pid  # type: ignore[assignment]
        self.exitCode: int | None = None
        self.signalCode: _signal.Signals | None = None
        self._control = control

    def __repr__(self) -> str:
        return f"<ChildProcess pid={self.pid}>"

    @property
    def connected(self) -> bool:
        return self._control is not None and self._control.transport is not None

    def kill(self, signal: str | int = "SIGTERM") -> bool:
        """
        Send C{signal} to the process.

        @return: Whether it was sent (the process was still running).
        """
        try:
            self.transport.signalProcess(int(toSignal(signal)))
        except ProcessExitedAlready:
            return False
        return True

    signalProcess = kill

    def disconnect(self) -> None:
        """
        Close the control channel (Node's C{process.disconnect()}): the
        worker sees its primary gone, finishes its connections and exits.
        """
        if self.connected:
            self._control.transport.loseConnection()  # type: ignore[union-attr]

    def ended(self, code: int | None, signal: _signal.Signals | None) -> None:
        self.exitCode, self.signalCode = code, signal


class WorkerAPI(EventEmitter):
    """
    Node's C{Worker} in the primary: events and their Deferred forms, and
    messages.
    """

    id: int
    state: str
    _control: ControlChannel | None

    def _initWorkerAPI(self) -> None:
        self._online: Latch[None] = Latch()
        self._listening: Latch[ListeningAddress] = Latch()
        self._disconnected: Latch[None] = Latch()
        self._relay: Callable[..., object] | None = None

    def relayEventsTo(self, relay: Callable[..., object]) -> None:
        """
        After this worker's own handlers, call C{relay(name, self, *args)} for
        each event: how the cluster re-emits its workers' events.
        """
        self._relay = relay

    def whenOnline(self) -> Deferred[None]:
        """
        Fires once the worker runs and its control channel is up; fails with
        L{WorkerGone} if it exits first.
        """
        return self._online.wait()

    def whenListening(self) -> Deferred[ListeningAddress]:
        """
        Fires with the address of the worker's first listen; fails with
        L{WorkerGone} if it exits first.
        """
        return self._listening.wait()

    def whenDisconnected(self) -> Deferred[None]:
        """
        Fires once the control channel has closed.
        """
        return self._disconnected.wait()

    def isConnected(self) -> bool:
        return self.state not in ("disconnected", "dead")

    def isDead(self) -> bool:
        return self.state == "dead"

    def send(self, message: Any, callback: Callable[[BaseException | None], object] | None = None) -> bool:
        """
        Send C{message} (any JSON-serialisable value, of any size) to the
        worker, where C{cluster.worker} emits C{'message'}.

        @param callback: Called with L{None} once the worker has it, or with
            the error if it never will.
        @return: Whether it was sent (C{False} once disconnected).
        @raise TypeError: C{message} is not JSON-serialisable.
        """
        return self._sendChunks(encodeMessage(message), callback)

    def _sendChunks(self, chunks: list[bytes], callback: Callable[..., object] | None) -> bool:
        if self._control is None or not self.isConnected() or self._control.transport is None:
            return False
        delivered = self._control.sendChunks(chunks)
        if callback is not None:
            delivered.addCallbacks(lambda _: callback(None), lambda reason: callback(reason.value))
        delivered.addErrback(lambda reason: None)
        return True

    def _announce(self, name: str, *args: Any) -> None:
        """
        Tell this worker's handlers, then the cluster, of an event.
        """
        if name == "online":
            self._online.fire(None)
        elif name == "listening":
            self._listening.fire(args[0])
        elif name == "disconnect":
            self._disconnected.fire(None)
        elif name == "exit":
            gone = lambda what: (
                lambda: WorkerGone(  # noqa: E731
                    f"worker {self.id} exited before it was {what}"
                )
            )
            self._online.fail(gone("online"))
            self._listening.fail(gone("listening"))
            self._disconnected.fire(None)
        self.emit(name, *args)
        if self._relay is not None:
            self._relay(name, self, *args)
