# -*- test-case-name: tests.test_agent -*-
"""
The limits a master keeps its workers to (C{--shutdown-timeout},
C{--worker-timeout}, C{--boot-timeout}, C{--max-connections},
C{--max-memory}, C{--drain-delay}).
"""

from __future__ import annotations

from attrs import frozen


@frozen
class Limits:
    """
    How long workers may take, and when they wear out.

    @ivar shutdownTimeout: Seconds a leaving worker may take to finish its
        connections before it is killed.
    @ivar workerTimeout: Seconds a ready worker may leave its heartbeat
        unanswered before it is aborted and replaced.
    @ivar bootTimeout: Seconds a new worker may take to become ready.
    @ivar maxConnections: Replace a worker after this many connections.
    @ivar maxMemory: Replace a worker whose resident memory exceeds this many
        bytes.
    @ivar drainDelay: Seconds the master keeps accepting after C{TERM}/C{INT}
        while it reports itself draining, so load balancers stop sending
        first; then it stops gracefully.
    """

    shutdownTimeout: float = 30.0
    workerTimeout: float = 30.0
    bootTimeout: float = 60.0
    maxConnections: int | None = None
    maxMemory: int | None = None
    drainDelay: float = 0.0
