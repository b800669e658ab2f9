# -*- test-case-name: tests.test_plugins -*-
"""
Plugins that keep in memory state their clients share: clustered, each
worker has its own copy, which their users can notice.  The master says so
once, in a warning; it does not refuse (a user may want N independent
servers).
"""

from __future__ import annotations

from twisted.python import usage

#: What clustering changes for each plugin known to share state in memory.
SHARED_STATE = {
    "words": "its chat users and groups live in each worker's memory, so users on different workers "
    "cannot see each other",
    "procmon": "every worker starts and watches its own copy of each process",
    "manhole": "each connection reaches the interpreter of the one worker that serves it",
    "xmpp-router": "its routing table lives in each worker's memory, so components on different workers "
    "cannot reach each other",
}


def sharedStateWarning(name: str, options: usage.Options) -> str | None:
    """
    The warning for clustering plugin C{name} with C{options}, if its
    clients share state in memory.
    """
    reason = SHARED_STATE.get(name)
    if reason is None and name == "inetd":
        reason = _inetdWaitServices(options)
    if reason is None:
        return None
    return f"{name} keeps state in memory: {reason} (see the README's clustered twist plugins)"


def _inetdWaitServices(options: usage.Options) -> str | None:
    """
    inetd's C{wait} services are meant to run one server at a time; each
    worker runs its own.
    """
    from twisted.runner.inetdconf import InetdConf

    conf = InetdConf()
    try:
        with open(options["file"]) as f:
            conf.parseFile(f)
    except (OSError, ValueError):
        return None
    waiting = [f"{s.port}/{s.protocol}" for s in conf.services if s.wait == "wait"]
    if not waiting:
        return None
    return f"its wait services ({', '.join(waiting)}), one server at a time, get one in each worker"
