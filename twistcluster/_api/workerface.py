# -*- test-case-name: tests.test_cluster_api, tests.test_node_lifecycle -*-
"""
The face of a worker that users see in the primary, as Node's C{Worker}:
its events (C{online}, C{listening}, C{disconnect}, C{exit}, C{message}),
their Deferred forms, C{send}, and C{process}.

It wraps the master's L{twistcluster._master.worker.Worker} (the engine's,
which the command line uses bare), hearing Node's events from it.
"""

from __future__ import annotations

import signal as _signal
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IProcessTransport

from .._common.events import EventEmitter, Latch
from .._common.messages import encodeMessage
from .._common.signals import toSignal

__all__ = ["ChildProcess", "ListeningAddress", "Worker", "WorkerGone", "broadcast", "toSignal"]


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


class EngineWorker(Protocol):
    """
    What the face needs of the master's worker
    (L{twistcluster._master.worker.Worker}).
    """

    id: int
    pid: int | None
    transport: IProcessTransport | None
    exitedAfterDisconnect: bool

    @property
    def state(self) -> str: ...

    def isConnected(self) -> bool: ...

    def isDead(self) -> bool: ...

    def disconnect(self) -> None: ...

    def kill(self, signal: str | int = ...) -> bool: ...

    def closeChannel(self) -> None: ...

    def sendMessage(self, chunks: list[bytes]) -> Deferred[None] | None: ...

    def announceTo(self, announce: Callable[..., object]) -> None: ...


class ChildProcess:
    """
    A worker's process in the primary (Node's C{ChildProcess}): its pid stays
    known after the process is gone, unlike a Twisted process transport's.

    @ivar pid: The process id.
    @ivar transport: The Twisted process transport.
    @ivar exitCode: The exit status, once it exited normally.
    @ivar signalCode: The signal that ended it, if one did.
    """

    def __init__(self, worker: EngineWorker) -> None:
        self._worker = worker
        self.transport = worker.transport
        self.pid: int = worker.pid  # type: ignore[assignment]
        self.exitCode: int | None = None
        self.signalCode: _signal.Signals | None = None

    def __repr__(self) -> str:
        return f"<ChildProcess pid={self.pid}>"

    @property
    def connected(self) -> bool:
        return self._worker.isConnected()

    def kill(self, signal: str | int = "SIGTERM") -> bool:
        """
        Send C{signal} to the process.

        @return: Whether it was sent (the process was still running).
        """
        return self._worker.kill(signal)

    signalProcess = kill

    def disconnect(self) -> None:
        """
        Close the control channel (Node's C{process.disconnect()}): the
        worker sees its primary gone, finishes its connections and exits.
        """
        self._worker.closeChannel()

    def ended(self, code: int | None, signal: _signal.Signals | None) -> None:
        self.exitCode, self.signalCode = code, signal


class Worker(EventEmitter):
    """
    Node's C{Worker} in the primary: events and their Deferred forms, and
    messages.

    @ivar id: Unique in the primary's life, counting from 1, never reused.
    @ivar process: Its process (Node's C{ChildProcess}).
    """

    def __init__(self, worker: EngineWorker) -> None:
        self._worker = worker
        self.id = worker.id
        self.process = ChildProcess(worker)
        self._online: Latch[None] = Latch()
        self._listening: Latch[ListeningAddress] = Latch()
        self._disconnected: Latch[None] = Latch()
        self._exited: Latch[tuple[int | None, _signal.Signals | None]] = Latch()
        self._relay: Callable[..., object] | None = None
        worker.announceTo(self._heard)

    def __repr__(self) -> str:
        return f"<Worker {self.id} pid={self.process.pid} {self.state}>"

    @property
    def state(self) -> str:
        """
        Node's: C{'online'}, C{'listening'}, C{'disconnecting'},
        C{'disconnected'}, C{'dead'} (C{'spawning'} before C{'online'}).
        """
        return self._worker.state

    @property
    def exitedAfterDisconnect(self) -> bool:
        """
        Whether it left because it was asked to (or said it leaves of its
        own will), not by accident.
        """
        return self._worker.exitedAfterDisconnect

    def isConnected(self) -> bool:
        return self._worker.isConnected()

    def isDead(self) -> bool:
        return self._worker.isDead()

    def disconnect(self) -> Worker:
        """
        Ask the worker to close its servers, finish its connections and exit;
        it is killed if it has not exited after the shutdown timeout.
        """
        self._worker.disconnect()
        return self

    def kill(self, signal: str | int = "SIGTERM") -> None:
        """
        Send C{signal} (a number, or a name such as C{"KILL"} or
        C{"SIGABRT"}) to the worker process now, without waiting for a
        graceful disconnect (Node's C{worker.kill()} in the primary).
        """
        self._worker.kill(signal)

    destroy = kill

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

    def whenExited(self) -> Deferred[tuple[int | None, _signal.Signals | None]]:
        """
        Fires with C{(exit code, signal)} once the process has ended.
        """
        return self._exited.wait()

    def send(self, message: Any, callback: Callable[[BaseException | None], object] | None = None) -> bool:
        """
        Send C{message} (any JSON-serialisable value, of any size) to the
        worker, where C{cluster.worker} emits C{'message'}.

        @param callback: Called with L{None} once the worker has it, or with
            the error if it never will.
        @return: Whether it was sent (C{False} once disconnected).
        @raise TypeError: C{message} is not JSON-serialisable.
        """
        return self.sendEncoded(encodeMessage(message), callback)

    def sendEncoded(self, chunks: list[bytes], callback: Callable[..., object] | None = None) -> bool:
        """
        As L{send}, for a message already cut by L{encodeMessage} (a
        broadcast encodes it once for every worker).
        """
        delivered = self._worker.sendMessage(chunks)
        if delivered is None:
            return False
        if callback is not None:
            delivered.addCallbacks(lambda _: callback(None), lambda reason: callback(reason.value))
        delivered.addErrback(lambda reason: None)
        return True

    def _heard(self, name: str, *args: Any) -> None:
        """
        Tell this worker's handlers, then the cluster, of one of Node's
        events.
        """
        if name == "online":
            self._online.fire(None)
        elif name == "listening":
            args = (ListeningAddress.fromSockname(args[0]),)
            self._listening.fire(args[0])
        elif name == "disconnect":
            self._disconnected.fire(None)
        elif name == "exit":
            self.process.ended(*args)
            self._exited.fire(args)
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


def broadcast(workers: Iterable[Worker], message: Any) -> int:
    """
    Send C{message} to every connected one of C{workers}, encoded once.

    @return: How many workers it was sent to.
    @raise TypeError: C{message} is not JSON-serialisable.
    """
    chunks = encodeMessage(message)
    return sum(worker.sendEncoded(chunks) for worker in list(workers))
