"""
What the benchmark runs: every configuration, by name, and the choice of a
subset (C{--only}).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

TWISTCLUSTER_POLICIES = ("rr", "least-conn", "none", "reuseport")
#: Node's policies (C{NODE_CLUSTER_SCHED_POLICY}).
NODE_POLICIES = ("rr", "none")
WORKER_COUNTS = (1, 2, 4)
#: The policies measured with the control socket and --metrics on as well.
COCKPIT_POLICIES = ("rr", "none")

TWISTCLUSTER = "twistcluster"
NODE = "node"
SINGLE = "twisted-single"
#: Plain Twisted processes (no cluster), each with its own SO_REUSEPORT
#: socket on the one port: what Twisted itself reaches with 2 processes.
PLAIN_PROCESSES = "twisted-reuseport"


@dataclass(frozen=True)
class BenchConfig:
    """
    One server set-up to measure.

    @ivar kind: L{TWISTCLUSTER}, L{NODE}, L{SINGLE} or L{PLAIN_PROCESSES}.
    @ivar policy: The scheduling policy (C{""} for the single process).
    @ivar workers: Worker processes (the single process is its own worker).
    @ivar cockpit: twistcluster with its operator services on: the control
        socket and C{--metrics}, scraped every second during the load
        (issue 15); the other twistcluster configurations run with
        C{--control none}.
    """

    kind: str
    policy: str
    workers: int
    cockpit: bool = False

    @property
    def name(self) -> str:
        if self.kind == SINGLE:
            return SINGLE
        return f"{self.family}-{self.workers}" + ("-cockpit" if self.cockpit else "")

    @property
    def family(self) -> str:
        """
        The configuration without its worker count (a line on the chart).
        """
        return self.kind if self.kind in (SINGLE, PLAIN_PROCESSES) else f"{self.kind}-{self.policy}"


def allConfigs() -> list[BenchConfig]:
    """
    Every configuration, in the order the table shows them.
    """
    configs = [BenchConfig(SINGLE, "", 1), BenchConfig(PLAIN_PROCESSES, "reuseport", 2)]
    for kind, policies in ((TWISTCLUSTER, TWISTCLUSTER_POLICIES), (NODE, NODE_POLICIES)):
        configs += [BenchConfig(kind, policy, n) for policy in policies for n in WORKER_COUNTS]
    configs += [BenchConfig(TWISTCLUSTER, policy, 2, cockpit=True) for policy in COCKPIT_POLICIES]
    return configs


def selectConfigs(only: str | None) -> list[BenchConfig]:
    """
    The configurations named by C{only}: comma-separated names or shell
    patterns (C{twistcluster-rr-*}); all of them for L{None}.

    @raise ValueError: A name or pattern matches nothing.
    """
    configs = allConfigs()
    if not only:
        return configs
    patterns = [p.strip() for p in only.split(",") if p.strip()]
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(c.name, pattern) for c in configs):
            known = ", ".join(c.name for c in configs)
            raise ValueError(f"--only {pattern!r} matches no configuration (known: {known})")
    return [c for c in configs if any(fnmatch.fnmatchcase(c.name, p) for p in patterns)]
