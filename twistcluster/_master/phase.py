# -*- test-case-name: tests.test_agent, tests.test_ctl -*-
"""
The master's phase through its life, as one small vocabulary: what health
checks, the balancer's agent, the status and the service manager read.

Its value is the word users see (the status's C{phase}, C{/healthz}, the
sd_notify C{STATUS=} line); nobody compares those words: the master answers
L{twistcluster._master.service.Master.isStopping}.
"""

from __future__ import annotations

from enum import Enum


class MasterPhase(Enum):
    """
    @cvar RUNNING: Serving, and taking commands.
    @cvar DRAINING: C{TERM}/C{INT} arrived and the drain delay runs: still
        accepting, while load balancers stop sending.
    @cvar STOPPING: The stop itself is asked (from before the listeners
        close).
    """

    RUNNING = "running"
    DRAINING = "draining"
    STOPPING = "stopping"
