# -*- test-case-name: tests.test_sdnotify -*-
"""
What the service manager hears from the master: systemd's notification
protocol (sd_notify(3)), spoken the way HAProxy's C{-Ws} master speaks it.

    READY=1                  once every configured worker is listening, and
                             again when a reload ends
    STATUS=...               how many workers are ready, the policy, the
                             bound addresses; kept current
    RELOADING=1              on HUP, with MONOTONIC_USEC= in the same
                             datagram (Type=notify-reload, systemd >= 253)
    EXTEND_TIMEOUT_USEC=...  every few seconds while starting, reloading
                             or stopping: systemd's own timeout only counts
                             once those outlast it, and a master whose
                             reactor is stuck stops extending
    STOPPING=1               when a graceful stop begins
    WATCHDOG=1               every WATCHDOG_USEC / 2, sent by the reactor
                             itself (no helper thread), so WatchdogSec=
                             catches a master whose event loop is stuck
    MAINPID=...              never: the master upgrade keeps the pid

Written here rather than taken from a library: the protocol is one datagram
per message, the libraries on PyPI (sdnotify, systemd-watchdog) send on a
blocking socket and systemd-python needs libsystemd's headers to build.
A datagram socket to a service manager that stopped reading must never
block the master's reactor: sends are non-blocking, and what the kernel
cannot take at once is retried shortly after, in order.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, MutableMapping
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

#: What the service manager tells the master alone: a worker that saw them
#: could confuse systemd (a READY=1 from user code, a second claim on the
#: inherited sockets).
MASTER_ONLY_VARIABLES = (
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
)

#: Seconds between EXTEND_TIMEOUT_USEC= messages, and how far each extends.
EXTEND_EVERY = 10.0
EXTEND_BY = 30.0
#: Seconds before a datagram the kernel could not take is tried again.
RETRY_AFTER = 0.05
#: Datagrams kept while the service manager does not read (the oldest go).
QUEUE_LIMIT = 64


def takeServiceManagerEnvironment(environ: MutableMapping[str, str]) -> dict[str, str]:
    """
    Remove the service manager's variables from C{environ} (the master's own
    environment, which every worker inherits).

    @return: The ones that were set.
    """
    return {name: environ.pop(name) for name in MASTER_ONLY_VARIABLES if name in environ}


def socketAddress(value: str) -> str:
    """
    C{$NOTIFY_SOCKET} as C{sendto} takes it: a path, or an abstract name
    (C{@name}, a leading NUL for the kernel).

    @raise ValueError: Neither.
    """
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    raise ValueError(f"NOTIFY_SOCKET={value!r} is neither a path nor an abstract @name")


def monotonicUsec() -> int:
    """
    C{CLOCK_MONOTONIC} in microseconds: what MONOTONIC_USEC= carries.
    """
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class NotifySocket:
    """
    Datagrams to the service manager's notification socket, never blocking.
    """

    _log = Logger()

    def __init__(self, clock: IReactorTime, address: str, sock: socket.socket | None = None) -> None:
        self._clock = clock
        self.address = address
        if sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        sock.setblocking(False)
        self._socket = sock
        self._queue: list[bytes] = []
        self._retry: Any = None
        self._complained: set[int] = set()

    def send(self, message: str) -> None:
        self._queue.append(message.encode("utf-8"))
        del self._queue[:-QUEUE_LIMIT]
        if self._retry is None:
            self._flush()

    def _flush(self) -> None:
        self._retry = None
        while self._queue:
            try:
                self._socket.sendto(self._queue[0], self.address)
            except BlockingIOError:
                self._retry = self._clock.callLater(RETRY_AFTER, self._flush)
                return
            except OSError as e:
                # Gone or refusing (no service manager any more): say so
                # once, and go on without it.
                if e.errno not in self._complained:
                    self._complained.add(e.errno or 0)
                    self._log.warn(
                        "cannot notify the service manager at {address}: {error}",
                        address=self.address.replace("\0", "@"),
                        error=e.strerror,
                    )
            del self._queue[0]

    def close(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        self._socket.close()


class ServiceNotifier:
    """
    The master's messages to its service manager; nothing is sent where the
    master was not started with C{NOTIFY_SOCKET}.

    @ivar ready: Whether READY=1 was sent (and no reload is under way).
    @ivar watchdogInterval: Seconds between WATCHDOG=1 messages, or L{None}.
    """

    _log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        socket: NotifySocket | None = None,
        watchdogUsec: int | None = None,
        monotonic: Callable[[], int] = monotonicUsec,
    ) -> None:
        self._clock = clock
        self._socket = socket
        self._monotonic = monotonic
        self.ready = False
        self._stopping = False
        self._reloads = 0
        self._status: str | None = None
        self.watchdogInterval = watchdogUsec / 2e6 if watchdogUsec else None
        self._watchdog: LoopingCall | None = None
        self._extending: LoopingCall | None = None

    @classmethod
    def fromEnvironment(cls, clock: IReactorTime, environ: dict[str, str], pid: int) -> ServiceNotifier:
        """
        From the service manager's variables (L{takeServiceManagerEnvironment}).

        @raise ValueError: C{NOTIFY_SOCKET} is malformed.
        """
        address = environ.get("NOTIFY_SOCKET")
        if not address:
            return cls(clock)
        watchdogUsec = None
        if environ.get("WATCHDOG_PID", str(pid)) == str(pid):
            try:
                watchdogUsec = int(environ.get("WATCHDOG_USEC", "")) or None
            except ValueError:
                watchdogUsec = None
        return cls(clock, NotifySocket(clock, socketAddress(address)), watchdogUsec)

    @property
    def enabled(self) -> bool:
        return self._socket is not None

    def _send(self, *assignments: str) -> None:
        if self._socket is not None:
            self._socket.send("\n".join(assignments) + "\n")

    def starting(self) -> None:
        """
        The master runs: start the watchdog, and extend the start-up
        timeout until every worker is ready.
        """
        if self._socket is None:
            return
        if self.watchdogInterval is not None and self._watchdog is None:
            self._watchdog = LoopingCall(self._send, "WATCHDOG=1")
            self._watchdog.clock = self._clock
            self._watchdog.start(self.watchdogInterval, now=True)
        self._extend(True)

    def status(self, text: str) -> None:
        """
        Tell the service manager what the cluster is doing (only when it
        changed).
        """
        if text != self._status:
            self._status = text
            self._send(f"STATUS={text}")

    def isReady(self, status: str) -> None:
        """
        Every configured worker is listening: READY=1, the first time, and
        once a reload ends.
        """
        if self.ready or self._reloads or self._stopping:
            self.status(status)
            return
        self.ready = True
        self._status = status
        self._extend(False)
        self._send("READY=1", f"STATUS={status}")

    @property
    def reloading(self) -> bool:
        """
        Whether a reload is under way.
        """
        return self._reloads > 0

    def reload(self, status: str) -> None:
        """
        A reload (rolling restart) begins: RELOADING=1 and the time now, in
        one datagram, so systemd knows this answers the reload it asked for.
        """
        if self._stopping:
            return
        self._reloads += 1
        self.ready = False
        self._status = status
        self._extend(True)
        self._send("RELOADING=1", f"MONOTONIC_USEC={self._monotonic()}", f"STATUS={status}")

    def resumedReload(self) -> None:
        """
        This image of the master goes on with a reload an earlier one began
        (the master upgrade, the pid the same): RELOADING=1 went out from it.
        """
        self._reloads += 1
        self.ready = False
        self._extend(True)

    def reloaded(self, status: str) -> None:
        """
        A reload ended (done, or the old workers kept): READY=1 once the
        last one under way has.
        """
        self._reloads = max(0, self._reloads - 1)
        if not self._reloads:
            self.isReady(status)

    def stopping(self, status: str) -> None:
        """
        A graceful stop begins (STOPPING=1 once; later calls only update the
        status).
        """
        if self._stopping:
            self.status(status)
            return
        self.ready = False
        self._stopping = True
        self._status = status
        self._extend(True)
        self._send("STOPPING=1", f"STATUS={status}")

    def mainPID(self, pid: int) -> None:
        """
        The master now runs as C{pid} (the master upgrade).
        """
        self._send(f"MAINPID={pid}")

    def _extend(self, on: bool) -> None:
        if self._socket is None:
            return
        if on and self._extending is None:
            self._extending = LoopingCall(self._send, f"EXTEND_TIMEOUT_USEC={int(EXTEND_BY * 1e6)}")
            self._extending.clock = self._clock
            self._extending.start(EXTEND_EVERY, now=False)
        elif not on and self._extending is not None:
            self._extending.stop()
            self._extending = None

    def close(self) -> None:
        """
        The master is about to exit: no more messages.
        """
        for loop in (self._watchdog, self._extending):
            if loop is not None and loop.running:
                loop.stop()
        self._watchdog = self._extending = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None
