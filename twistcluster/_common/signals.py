# -*- test-case-name: tests.test_cluster_api -*-
"""
Signals as users name them: Node's C{"SIGKILL"}, Twisted's C{"KILL"}, or a
number (the primary's C{worker.kill()}, a worker's C{cluster.worker.kill()},
and the master's own kills).
"""

from __future__ import annotations

import signal as _signal


def toSignal(value: str | int) -> _signal.Signals:
    """
    A signal given as Node does (C{"SIGKILL"}), as Twisted does (C{"KILL"}),
    or as a number.

    @raise ValueError: No such signal.
    """
    if isinstance(value, int):
        return _signal.Signals(value)
    name = value.upper()
    try:
        return _signal.Signals[name if name.startswith("SIG") else "SIG" + name]
    except KeyError:
        raise ValueError(f"no such signal: {value!r}") from None
