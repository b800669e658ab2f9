# -*- test-case-name: tests.test_policies -*-
"""
The scheduling policies (C{--scheduling}, or C{$TWISTCLUSTER_SCHED_POLICY}):
who accepts connections, and how they are spread over the workers.

    - C{rr}: the master accepts and hands each connection to the next
      worker in turn (Node's C{SCHED_RR}).
    - C{least-conn}: the master accepts and hands each connection to the
      worker with the fewest live connections on that endpoint.
    - C{none}: the master binds, every worker accepts on the one shared
      socket, and the kernel picks (Node's C{SCHED_NONE}).
    - C{reuseport}: the master binds one C{SO_REUSEPORT} socket per worker
      for the same address; the kernel spreads connections by hash.

UDP sockets are always shared (C{none}): a datagram needs no hand-off.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

#: The environment variable that chooses the policy when the option does not.
POLICY_ENVIRONMENT = "TWISTCLUSTER_SCHED_POLICY"

#: The policies as the cluster API names them: Node's (the kernel spreads
#: connections on the shared socket, or the primary hands them out in turn)
#: and twistcluster's own two.
SCHED_NONE = 1
SCHED_RR = 2
SCHED_LEAST_CONN = 3
SCHED_REUSEPORT = 4


class SchedulingPolicy(enum.Enum):
    RR = "rr"
    LEAST_CONN = "least-conn"
    NONE = "none"
    REUSEPORT = "reuseport"

    @property
    def handsOff(self) -> bool:
        """
        Does the master accept connections and hand them to workers?
        """
        return self in (SchedulingPolicy.RR, SchedulingPolicy.LEAST_CONN)


def schedulingPolicy(option: str | None, environ: Mapping[str, str]) -> SchedulingPolicy:
    """
    The policy the command line asks for: the option, else the environment,
    else C{rr}.

    @raise ValueError: Not a policy name; the message names where it came
        from and the choices.
    """
    if option is not None:
        source, name = "--scheduling", option
    elif environ.get(POLICY_ENVIRONMENT):
        source, name = f"${POLICY_ENVIRONMENT}", environ[POLICY_ENVIRONMENT]
    else:
        return SchedulingPolicy.RR
    try:
        return SchedulingPolicy(name)
    except ValueError:
        choices = ", ".join(p.value for p in SchedulingPolicy)
        raise ValueError(f"{source} {name!r} is not a scheduling policy (choose from {choices})") from None
