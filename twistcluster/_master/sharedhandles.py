# -*- test-case-name: tests.test_shared -*-
"""
Handles whose workers accept (or read datagrams) themselves: the master
binds, and C{QueryServer}'s answer carries the listening socket.

    - L{SharedHandle}: one socket, shared by every worker (C{none}, and every
      UDP socket); the kernel wakes one of them per connection or datagram.
      For a TCP socket under C{none}, a table of each worker's open
      connections goes with it (L{twistcluster._common.balance}).
    - L{ReusePortHandle}: one C{SO_REUSEPORT} socket per worker, all bound to
      the same address; the kernel spreads connections by a hash of their
      addresses.

The master never reads these sockets.
"""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING, Any

from attrs import define, field
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import CannotListenError
from twisted.logger import Logger

from .._common.balance import BalanceTable
from .._common.endpoints import ListenSpec
from .._common.protocol import ListenRefused
from .._common.sockets import acceptQueue, bindSocket, inheritedSocket, socknameOf

if TYPE_CHECKING:
    from .handles import HandOffTarget


class SharedHandle:
    """
    A listening socket that every worker serves on its own.

    @ivar _lent: The descriptors lent to each worker in C{QueryServer}'s
        answer.  The answer's bytes are written before the descriptors are
        sent (C{sendmsg} runs when the reactor flushes), so the master keeps
        them open until the worker has them (it says C{Listening}), stops, or
        is gone: closed any earlier, another file could go out under their
        numbers.
    @ivar _balance: The table of the workers' open connections, for a TCP
        socket under C{none}.
    @ivar _removeFile: Whether the master bound a UNIX socket file, and so
        removes it when it stops (never one it inherited).
    """

    scheduling = "none"
    _log = Logger()

    def __init__(self, key: str, spec: ListenSpec, close: Any = os.close, adopted: int | None = None) -> None:
        """
        @param adopted: The socket to serve (an earlier image of the master
            bound it), instead of binding one; it is duplicated.
        """
        self.key = key
        self.spec = spec
        self._close = close
        self._socket: socket.socket | None = (
            self._bind() if adopted is None else inheritedSocket(spec, adopted)
        )
        self.sockname = socknameOf(self._socket, spec)
        self._lent: dict[HandOffTarget, list[int]] = {}
        self._removeFile = spec.kind == "unix" and spec.fd < 0
        self._balance = self._balanceTable() if adopted is None else None

    def fileno(self) -> int:
        assert self._socket is not None
        return self._socket.fileno()

    @property
    def balance(self) -> BalanceTable | None:
        """
        The table of the workers' open connections (C{none}, TCP).
        """
        return self._balance

    def adoptBalance(self, table: BalanceTable) -> None:
        self._balance = table

    def _balanceTable(self) -> BalanceTable | None:
        if self.spec.kind != "tcp":
            return None
        try:
            return BalanceTable()
        except OSError as e:
            # No memfd_create (Linux before 3.17): the kernel alone decides.
            self._log.warn("{key}: workers accept without balancing: {error}", key=self.key, error=e)
            return None

    def _bind(self) -> socket.socket:
        if self.spec.fd >= 0:
            return inheritedSocket(self.spec)
        return bindSocket(self.spec)

    def _lend(self, worker: HandOffTarget) -> int:
        """
        A descriptor of the socket C{worker} is to serve, for the master to
        send it and later close.
        """
        assert self._socket is not None
        return os.dup(self._socket.fileno())

    def answer(self, worker: HandOffTarget) -> dict[str, Any]:
        if self._socket is None:
            raise ListenRefused(f"the master is no longer listening on {self.key}")
        self._release(worker)
        try:
            fd = self._lend(worker)
        except (OSError, CannotListenError) as e:
            raise ListenRefused(f"cannot listen on {self.key} for worker {worker.id}: {e}") from e
        lent = self._lent[worker] = [fd]
        answer: dict[str, Any] = {
            "key": self.key,
            "sockname": self.sockname,
            "fds": lent,
            "reportClosed": False,
        }
        balance = self._balance.lend(worker) if self._balance is not None else None
        if balance is not None:
            answer["balanceSlot"], balanceFD = balance
            lent.append(balanceFD)
        self._answered(answer)
        return answer

    def _answered(self, answer: dict[str, Any]) -> None:
        """
        Add what the worker needs to know of the socket it is lent.
        """

    def add(self, worker: HandOffTarget) -> None:
        self._release(worker)

    def retire(self, worker: HandOffTarget) -> None:
        self._release(worker)

    def remove(self, worker: HandOffTarget) -> None:
        self._release(worker)
        if self._balance is not None:
            self._balance.release(worker)

    def connectionsClosed(self, worker: HandOffTarget, count: int) -> None:
        pass

    def _release(self, worker: HandOffTarget) -> None:
        for fd in self._lent.pop(worker, ()):
            self._close(fd)

    def stopAccepting(self) -> Deferred[None]:
        """
        Close the master's own socket (a plain close: the workers' copies
        live on until each stops serving, as do their maps of the table) and
        remove the file it bound.
        """
        if self._balance is not None:
            self._balance.close()
        if self._socket is not None:
            self._socket.close()
            self._socket = None
            if self._removeFile:
                try:
                    os.unlink(self.spec.address)
                except FileNotFoundError:
                    pass
        return succeed(None)

    def closeNow(self) -> None:
        self.stopAccepting()

    def whenIdle(self) -> Deferred[None]:
        # The master accepts nothing here: nothing waits for a worker.
        return succeed(None)

    def closeWaiting(self) -> None:
        for worker in list(self._lent):
            self._release(worker)

    def statistics(self) -> dict[str, Any]:
        """
        The kernel's accept queue of the shared socket (the workers accept:
        the master counts nothing else).
        """
        queue = acceptQueue(self._socket) if self._socket is not None else None
        return {
            "acceptQueue": None if queue is None else queue[0],
            "acceptQueueLimit": None if queue is None else queue[1],
        }


class ReusePortHandle(SharedHandle):
    """
    One C{SO_REUSEPORT} listening socket per worker, each bound to the same
    address by the master (so port 0 and privileged ports work).

    The master's own socket is bound but never listens: it holds the address
    and learns the port the kernel chose for port 0, and, not listening, the
    kernel queues no connection on it.  Nor does the master listen on the
    socket it lends a worker: the worker does, once it has adopted it and is
    about to accept (C{listenBacklog}).  A socket joins the port's
    C{SO_REUSEPORT} group (and gets a share of its connections) only then,
    so none that a worker was lent but never served (it was refused, it
    crashed before, it never confirmed) sits in the group unaccepted.

    The master keeps the sockets it lends (L{_kept}), so that a worker's
    replacement is lent the same socket: once listening it never leaves the
    C{SO_REUSEPORT} group, and the connections queued on it are served by
    the replacement instead of reset (Linux resets a listening socket's
    queue when its last descriptor closes, unless
    C{net.ipv4.tcp_migrate_req=1}).

        - By default, one socket per slot: the worker that replaces another
          in its slot (a rolling restart, an upgrade) is lent its socket; a
          worker that dies, or leaves with none to replace it (C{TTOU}, a
          hung worker), takes its socket along.
        - After a privilege drop (C{--user}) the master can bind no more of
          them (a privileged port, or a C{SO_REUSEPORT} group that root's
          sockets hold): it binds C{presized} sockets up front, one per
          configured worker, and keeps them all; a new worker gets the socket
          no serving worker holds (a crashed or drained worker's), else the
          one whose holders are oldest (the worker a rolling restart
          replaces first).

    @ivar _presized: Whether the kept sockets were bound up front.
    @ivar _kept: Each kept socket, its slot (L{None} for one bound up
        front), and the workers it is lent to (whether each is leaving).
    """

    scheduling = "reuseport"

    def __init__(
        self,
        key: str,
        spec: ListenSpec,
        close: Any = os.close,
        presized: int | None = None,
        adopted: int | None = None,
    ) -> None:
        super().__init__(key, spec, close, adopted)
        self._presized = bool(presized)
        self._kept: list[KeptSocket] = []
        if presized and adopted is None:
            # Unlistened too: each listens once a worker serves it (and
            # stays listening, its queue kept for the next worker it is lent
            # to, after that worker has gone).
            self._kept = [KeptSocket(self._unlistened()) for _ in range(presized)]

    def adoptKept(
        self, kept: list[tuple[int, int | None, dict[HandOffTarget, bool]]], presized: bool
    ) -> None:
        """
        Keep the sockets (duplicated) an earlier image of the master kept
        (an upgrade), lent to the same workers.
        """
        self._presized = presized
        self._kept = [
            KeptSocket(inheritedSocket(self.spec, fd), slot, dict(holders)) for fd, slot, holders in kept
        ]

    @property
    def presized(self) -> bool:
        return self._presized

    def _bind(self) -> socket.socket:
        return bindSocket(self.spec, reusePort=True, listen=False)

    def _unlistened(self) -> socket.socket:
        return bindSocket(self.spec, reusePort=True, port=self.sockname["port"], listen=False)

    def _balanceTable(self) -> None:
        # Each worker has its own queue: one stepping aside would only
        # leave its share waiting.
        return None

    def statistics(self) -> dict[str, Any]:
        # Each worker's socket has its own queue.
        return {"acceptQueue": None, "acceptQueueLimit": None}

    def keptSockets(self) -> list[KeptSocket]:
        return list(self._kept)

    def _lend(self, worker: HandOffTarget) -> int:
        self._forget(worker)
        kept = self._presizedFor() if self._presized else self._slotsFor(worker)
        if kept is None:
            return self._unlistened().detach()
        kept.holders[worker] = False
        return os.dup(kept.socket.fileno())

    def _presizedFor(self) -> KeptSocket:
        def score(kept: KeptSocket) -> tuple[int, int]:
            serving = kept.serving()
            return (len(serving), max((w.id for w in serving), default=0))

        return min(self._kept, key=score)

    def _slotsFor(self, worker: HandOffTarget) -> KeptSocket | None:
        slot: int | None = getattr(worker, "slot", None)
        if slot is None:
            # A worker of the API's primary: its socket is its own.
            return None
        for kept in self._kept:
            if kept.slot == slot:
                return kept
        kept = KeptSocket(self._unlistened(), slot)
        self._kept.append(kept)
        return kept

    def _forget(self, worker: HandOffTarget) -> None:
        for kept in self._kept:
            kept.holders.pop(worker, None)

    def retire(self, worker: HandOffTarget) -> None:
        super().retire(worker)
        for kept in self._kept:
            if worker in kept.holders:
                kept.holders[worker] = True
        self._letGo()

    def remove(self, worker: HandOffTarget) -> None:
        super().remove(worker)
        self._forget(worker)
        self._letGo()

    def _letGo(self) -> None:
        """
        Close each slot's socket that no serving worker holds (one bound up
        front is kept: the master could not bind it again).
        """
        if self._presized:
            return
        for kept in list(self._kept):
            if not kept.serving():
                self._kept.remove(kept)
                kept.socket.close()

    def stopAccepting(self) -> Deferred[None]:
        for kept in self._kept:
            kept.socket.close()
        self._kept = []
        return super().stopAccepting()

    def _answered(self, answer: dict[str, Any]) -> None:
        answer["listenBacklog"] = self.spec.backlog


@define
class KeptSocket:
    """
    A C{SO_REUSEPORT} socket the master keeps and lends.

    @ivar slot: The slot whose workers it is lent to (L{None}: any).
    @ivar holders: The workers it is lent to, and whether each is leaving.
    """

    socket: socket.socket
    slot: int | None = None
    holders: dict[HandOffTarget, bool] = field(factory=dict)

    def serving(self) -> list[HandOffTarget]:
        return [worker for worker, leaving in self.holders.items() if not leaving]
