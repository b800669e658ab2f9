# -*- test-case-name: tests.test_service -*-
"""
Process titles, as C{ps}, C{top} and C{/proc/PID/cmdline} show them:

    twistcluster master: FACTORY-or-subcommand [LISTEN ...] (N workers, POLICY)
    twistcluster worker ID: FACTORY-or-subcommand

C{setproctitle} writes the title over the process's own argument area.  It
is told to leave the environment area alone (C{SPT_NOENV}): the title is
then at most as long as the original command line (always long enough
here), and C{/proc/PID/environ} stays readable for operators and tools.
"""

from __future__ import annotations

import os
from collections.abc import Sequence


def masterTitle(serving: str, listens: Sequence[str], workers: int, policy: str) -> str:
    listening = "".join(f" {description}" for description in listens)
    return f"twistcluster master: {serving}{listening} ({workers} workers, {policy})"


def workerTitle(workerId: int, serving: str) -> str:
    return f"twistcluster worker {workerId}: {serving}"


def setTitle(title: str) -> None:
    """
    Show C{title} as this process's command line (nothing happens without
    C{setproctitle}).
    """
    try:
        import setproctitle
    except ImportError:  # pragma: no cover (a dependency; kept optional at run time)
        return
    given = os.environ.get("SPT_NOENV")
    os.environ["SPT_NOENV"] = "1"
    try:
        setproctitle.setproctitle(title)
    finally:
        if given is None:
            del os.environ["SPT_NOENV"]
