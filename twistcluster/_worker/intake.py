# -*- test-case-name: tests.test_intake -*-
"""
A worker taking the connections the master hands it (C{NewConn}): each is
served by the port of its key, and the answer says which were taken.

Two things go wrong here that are nobody's bug, and neither is worth a
traceback:

    - the client reset the connection before the worker got to it (a
      client that connects and resets at once, or one that waited for a
      worker that died): C{getpeername()} fails.  It is dropped quietly,
      answered as taken (the master only closes its copy), and counted; a
      line every L{HandOffIntake.summaryInterval} seconds at most says how
      many.
    - the worker is out of descriptors: the kernel dropped some of the
      sockets on the way (L{twistcluster._common.descriptors}), or adopting
      one fails with C{EMFILE}.  Those are refused with C{outOfDescriptors},
      so the master gives them to another worker and leaves this one be for
      a moment; a line every L{HandOffIntake.summaryInterval} seconds at
      most says so.
"""

from __future__ import annotations

import errno
import os
import resource
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

#: Errors adopting a connection whose client is already gone.
_GONE = frozenset({errno.ENOTCONN, errno.ECONNRESET})
#: Errors adopting a connection for want of descriptors (or memory).
_SHORT = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class ServingPort(Protocol):
    key: str | None
    reportClosed: bool

    def connectionReceived(self, fd: int) -> bool: ...


class HandOffIntake:
    """
    @ivar gone: Connections whose client was gone before they were served.
    @ivar refusedShort: Connections refused for want of descriptors.
    @ivar summaryInterval: Seconds between the lines that count clients that
        were gone.
    """

    _log = Logger()
    summaryInterval = 10.0

    def __init__(
        self,
        clock: IReactorTime,
        workerId: int,
        ports: Mapping[str, ServingPort],
        reportClosed: Callable[[str], object],
    ) -> None:
        self._clock = clock
        self._workerId = workerId
        self._ports = ports
        self._reportClosed = reportClosed
        self.gone = 0
        self.refusedShort = 0
        self._goneUnsaid = 0
        self._summary: IDelayedCall | None = None
        self._shortSaid = float("-inf")

    def take(self, key: str, fds: list[int | None]) -> dict[str, Any]:
        """
        Serve the sockets C{fds} (L{None}: one that never arrived) for
        C{key}; each received one is closed here (the transport has a
        duplicate).

        @return: C{NewConn}'s answer.
        """
        port = self._ports.get(key)
        accepted = []
        short = False
        for fd in fds:
            if fd is None:
                short = True
                accepted.append(False)
                continue
            try:
                accepted.append(port is not None and port.connectionReceived(fd))
            except OSError as e:
                if e.errno in _GONE:
                    self.clientGone(port)
                    accepted.append(True)
                elif e.errno in _SHORT:
                    short = True
                    accepted.append(False)
                else:
                    self._log.failure("could not serve a connection for {key}", key=key)
                    accepted.append(False)
            except Exception:
                self._log.failure("could not serve a connection for {key}", key=key)
                accepted.append(False)
            finally:
                os.close(fd)
        if short:
            self._outOfDescriptors(accepted.count(False))
            return {"accepted": accepted, "outOfDescriptors": True}
        return {"accepted": accepted}

    def clientGone(self, port: ServingPort | None) -> None:
        """
        A connection handed to C{port} had already ended: count it (and
        under least-conn report it closed, as the master counted it ours).
        """
        self.gone += 1
        self._goneUnsaid += 1
        if port is not None and port.reportClosed and port.key is not None:
            # The master counted it as one of ours (least-conn): it ended.
            self._reportClosed(port.key)
        if self._summary is None:
            self._summary = self._clock.callLater(self.summaryInterval, self.sayGone)

    def sayGone(self) -> None:
        """
        Log how many clients were gone since the last such line, if any.
        """
        if self._summary is not None and self._summary.active():
            self._summary.cancel()
        self._summary = None
        if self._goneUnsaid:
            self._log.info(
                "worker {workerId}: {count} clients had closed or reset their connections"
                " before they could be served ({total} in all)",
                workerId=self._workerId,
                count=self._goneUnsaid,
                total=self.gone,
            )
            self._goneUnsaid = 0

    def _outOfDescriptors(self, refused: int) -> None:
        # Near its limit a worker flips between short and not with every
        # connection that ends: one line per summaryInterval at most.
        self.refusedShort += refused
        now = self._clock.seconds()
        if now - self._shortSaid < self.summaryInterval:
            return
        self._shortSaid = now
        self._log.warn(
            "worker {workerId} is out of descriptors (limit {limit}): the master gives the connections"
            " it cannot take to other workers until some of its own close ({count} so far)",
            workerId=self._workerId,
            limit=resource.getrlimit(resource.RLIMIT_NOFILE)[0],
            count=self.refusedShort,
        )
