# -*- test-case-name: tests.test_balance -*-
"""
Load-aware accepting under C{none}: the workers that share one listening
socket publish how many connections each has open, in a small table of
shared memory, and a worker ahead of the least loaded by more than
L{MARGIN} leaves the next connections to the others for a moment.

Without it the kernel decides alone, and it wakes whichever worker waits:
a burst of keep-alive connections (a client's connection pool opening, a
load balancer's) often lands entirely on the one worker that happened to
run, and stays there (Node's documentation reports the same of its
C{SCHED_NONE}).

The table is an array of 64-bit integers in a C{memfd} the master makes
for the listening socket and sends, with the socket, to each worker (as
it would send a descriptor).  Element 0 holds how many slots have ever been
used; slot C{s} (from 1) is elements C{2s}, the connections its worker has
open on that socket (or L{NOT_SERVING}), and C{2s + 1}, how many it has
accepted in all.  A worker writes only its own slot, and only while it
accepts; the master gives a slot out again only once its worker has exited.

A worker that steps aside accepts again after L{STEP_ASIDE} seconds, at
once if no other worker has accepted anything meanwhile (they may all be
busy, hung, or aside too); otherwise it looks at the table again.  It
steps aside at most once every L{ASIDE_EVERY} seconds.  So nothing waits
for long on the counts being right, and a busy worker loses at most
STEP_ASIDE / ASIDE_EVERY (4%) of its accepting time to the others.
"""

from __future__ import annotations

import mmap
import os

#: A slot whose worker does not accept (gone, stopped, or never there).
NOT_SERVING = 1 << 62
#: Workers with up to this many more connections than the least loaded one
#: accept as usual.
MARGIN = 4
#: How long (seconds) a worker ahead of the others leaves new connections
#: to them before it looks again.
STEP_ASIDE = 0.002
#: A worker steps aside at most once in this many seconds.  Under many
#: short connections the open counts swing by more than L{MARGIN} within a
#: millisecond; stepping aside each time cost three quarters of the rate.
ASIDE_EVERY = 0.05
#: Slots in one table: the workers serving one socket at once.
CAPACITY = 256
_ITEM = 8


def _view(mapping: mmap.mmap) -> memoryview:
    return memoryview(mapping).cast("q")


def _size(capacity: int) -> int:
    return (capacity + 1) * 2 * _ITEM


class BalanceTable:
    """
    The master's side: the table of one listening socket, and which worker
    holds which slot.
    """

    def __init__(self, capacity: int = CAPACITY) -> None:
        self.capacity = capacity
        fd = os.memfd_create("twistcluster-balance", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, _size(capacity))
            self._mapping = mmap.mmap(fd, _size(capacity))
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._table = _view(self._mapping)
        for slot in range(1, capacity + 1):
            self._table[2 * slot] = NOT_SERVING
        self._slots: dict[object, int] = {}

    @classmethod
    def adopt(cls, fd: int, slots: dict[object, int]) -> BalanceTable:
        """
        The table in C{fd} (duplicated) as an earlier image of the master
        left it (an upgrade), its slots lent to C{slots}' workers.
        """
        self = cls.__new__(cls)
        self._fd = os.dup(fd)
        size = os.fstat(self._fd).st_size
        self.capacity = size // (2 * _ITEM) - 1
        self._mapping = mmap.mmap(self._fd, size)
        self._table = _view(self._mapping)
        self._slots = dict(slots)
        return self

    @property
    def descriptor(self) -> int:
        return self._fd

    def slots(self) -> dict[object, int]:
        """
        Each worker's slot.
        """
        return dict(self._slots)

    def lend(self, worker: object) -> tuple[int, int] | None:
        """
        A slot for C{worker} (its own, if it has one) and a descriptor of
        the table for the master to send it and later close; L{None} if
        every slot is taken or the table is closed.
        """
        if self._fd < 0:
            return None
        slot = self._slots.get(worker)
        if slot is None:
            taken = set(self._slots.values())
            free = [s for s in range(1, self.capacity + 1) if s not in taken]
            if not free:
                return None
            slot = self._slots[worker] = free[0]
            self._table[2 * slot] = 0
            self._table[2 * slot + 1] = 0
            self._table[0] = max(self._table[0], slot)
        return slot, os.dup(self._fd)

    def release(self, worker: object) -> None:
        """
        C{worker} has exited: its slot counts for nothing, and may be lent
        again.
        """
        slot = self._slots.pop(worker, None)
        if slot is not None and self._fd >= 0:
            self._table[2 * slot] = NOT_SERVING

    def openConnections(self, slot: int) -> int:
        return self._table[2 * slot]

    def close(self) -> None:
        if self._fd >= 0:
            self._table.release()
            self._mapping.close()
            os.close(self._fd)
            self._fd = -1


class AcceptBalance:
    """
    A worker's side: publish this worker's connections, and tell whether it
    is ahead of the least loaded worker.

    @ivar open: The connections this worker has open on the socket.
    """

    def __init__(self, fd: int, slot: int) -> None:
        """
        Map the table C{fd} (the caller closes it) and take C{slot}.
        """
        self._mapping = mmap.mmap(fd, 0)
        self._table = _view(self._mapping)
        self._slot = slot
        self.open = 0
        self._accepted = 0
        self._publishing = True
        self._table[2 * slot] = 0

    def opened(self) -> None:
        self.open += 1
        self._accepted += 1
        if self._publishing:
            self._table[2 * self._slot + 1] = self._accepted
            self._table[2 * self._slot] = self.open

    def closed(self) -> None:
        self.open -= 1
        if self._publishing:
            self._table[2 * self._slot] = self.open

    def ahead(self) -> bool:
        """
        Whether this worker has more than L{MARGIN} connections more than
        the least loaded worker that accepts.
        """
        if self.open <= MARGIN:
            # No count is below 0: no need to read the others'.
            return False
        table = self._table
        least = min(table[2 : 2 * table[0] + 1 : 2])
        return self.open > least + MARGIN

    def acceptedByAll(self) -> int:
        """
        The connections every worker on the table has accepted: it changes
        when another worker accepts one (or joins).
        """
        table = self._table
        return sum(table[3 : 2 * table[0] + 2 : 2])

    def stop(self) -> None:
        """
        This worker accepts no more: the others stop counting on it.
        """
        if self._publishing:
            self._publishing = False
            self._table[2 * self._slot] = NOT_SERVING
