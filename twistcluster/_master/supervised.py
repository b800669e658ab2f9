# -*- test-case-name: tests.test_supervisor -*-
"""
What the L{Supervisor<twistcluster._master.supervisor.Supervisor>} works
with: the workers it keeps serving (L{Supervised}), what starts them
(L{SpawnsWorkers}: the spawner, or a test's fake), and why it replaces one
(L{RestartCause}, which the status and the metrics count).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Protocol, TypeVar

from twisted.internet.defer import Deferred

from .spawner import WorkerCommand


class RestartCause(StrEnum):
    """
    Why a worker was replaced (L{Supervisor.restarts} counts them).
    """

    CRASH = "crash"
    BOOT_FAILURE = "boot-failure"
    HUNG = "hung"
    MEMORY = "memory"
    CONNECTION_LIMIT = "connection-limit"
    RELOAD = "reload"


class Supervised(Protocol):
    """
    A worker, as the supervisor needs it.
    """

    id: int
    pid: int | None
    slot: int | None
    generation: int
    lastError: str | None
    connectionLimit: int | None

    @property
    def everReady(self) -> bool: ...

    def isServing(self) -> bool: ...

    def isReady(self) -> bool: ...

    def whenReady(self) -> Deferred[bool]: ...

    def whenExited(self) -> Deferred[Any]: ...

    def whenWornOut(self) -> Deferred[str]: ...

    def disconnect(self) -> object: ...

    def kill(self, signal: str | int = ...) -> object: ...

    def abort(self, why: str) -> None: ...


W = TypeVar("W", bound=Supervised)
W_co = TypeVar("W_co", bound=Supervised, covariant=True)


class SpawnsWorkers(Protocol[W_co]):
    """
    Starts worker processes (L{twistcluster._master.spawner.Spawner}).
    """

    def spawn(self, command: WorkerCommand, slot: int | None, generation: int) -> W_co: ...
