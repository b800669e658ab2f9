# -*- test-case-name: tests.test_agent, tests.test_signaldispatch, tests.test_ctl -*-
"""
Where the master is in its life, and where its upgrade is: two small
vocabularies, read by health checks, the balancer's agent, the status and
the service manager.

Each value is the word users see (the status's C{phase}s, C{/healthz}, the
sd_notify C{STATUS=} line); nobody compares those words, and only each
phase's owner looks at it: others ask
L{twistcluster._master.service.Master.isStopping} and
L{twistcluster._master.upgrade.MasterUpgrade.underWay}.
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


class UpgradePhase(Enum):
    """
    Where the master's upgrade is; its value is the status's word for it.

    @cvar CHECKING: The old image checks the new code.
    @cvar HANDING_OVER: The old image gets quiet, and C{exec}s the new code.
    @cvar REPLACING_WORKERS: The new image replaces the old code's workers.
    """

    IDLE = "idle"
    CHECKING = "checking"
    HANDING_OVER = "handing over"
    REPLACING_WORKERS = "replacing workers"
