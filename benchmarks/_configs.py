"""
What the benchmark runs: every configuration, by name, and the choice of a
subset (C{--only}).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

TWISTCLUSTER, NODE, SINGLE = "twistcluster", "node", "twisted-single"
#: Plain Twisted processes (no cluster), each with its own SO_REUSEPORT
#: socket on the one port: what Twisted itself reaches with 2 processes.
PLAIN_PROCESSES = "twisted-reuseport"


@dataclass(frozen=True)
class BenchConfig:
    """
    One server set-up to measure.

    @ivar kind: L{TWISTCLUSTER}, L{NODE}, L{SINGLE} or L{PLAIN_PROCESSES}.
    @ivar policy: The scheduling policy (Node's C{NODE_CLUSTER_SCHED_POLICY}).
    @ivar workers: Worker processes (the single process is its own worker).
    @ivar cockpit: twistcluster with its operator services on: the control
        socket and C{--metrics}, scraped every second under load (issue 15);
        the other twistcluster configurations run with C{--control none}.
    """

    kind: str
    policy: str
    workers: int
    cockpit: bool = False

    @property
    def name(self) -> str:
        if self.kind == SINGLE:
            return SINGLE
        family = self.kind if self.kind == PLAIN_PROCESSES else f"{self.kind}-{self.policy}"
        return f"{family}-{self.workers}" + ("-cockpit" if self.cockpit else "")


def allConfigs() -> list[BenchConfig]:
    """
    Every configuration, in the order the table shows them.
    """
    configs = [BenchConfig(SINGLE, "", 1), BenchConfig(PLAIN_PROCESSES, "reuseport", 2)]
    for kind, policies in ((TWISTCLUSTER, ("rr", "least-conn", "none", "reuseport")), (NODE, ("rr", "none"))):
        configs += [BenchConfig(kind, policy, n) for policy in policies for n in (1, 2, 4)]
    return configs + [BenchConfig(TWISTCLUSTER, policy, 2, cockpit=True) for policy in ("rr", "none")]


def selectConfigs(only: str | None) -> list[BenchConfig]:
    """
    The configurations named by C{only}: comma-separated names or shell
    patterns (C{twistcluster-rr-*}); all of them for L{None}.

    @raise ValueError: A name or pattern matches nothing.
    """
    configs = allConfigs()
    patterns = [p.strip() for p in (only or "*").split(",") if p.strip()]
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(c.name, pattern) for c in configs):
            known = ", ".join(c.name for c in configs)
            raise ValueError(f"--only {pattern!r} matches no configuration (known: {known})")
    return [c for c in configs if any(fnmatch.fnmatchcase(c.name, p) for p in patterns)]
