"""
twistcluster: Node.js-style process clusters for Twisted.

One master process owns the listening sockets; N worker processes run the
user's protocols.  The master accepts each connection and hands the socket
itself to a worker over an AMP control channel.

C{cluster} is Node's C{cluster} module in Python::

    from twisted.internet import reactor
    from twistcluster import cluster

    if cluster.isPrimary:
        for _ in range(4):
            cluster.fork()
    else:
        cluster.listen("tcp:8000", MyFactory())
    reactor.run()
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: Where each public name lives.  Each is imported on first use (PEP 562):
#: C{twist cluster}'s master imports only what it runs, which lets it keep
#: pyOpenSSL out (see L{twistcluster._tap.leaveOutTLS}).
_PUBLIC = {
    "cluster": "_cluster",
    "makeCluster": "_cluster",
    "ListenSpec": "_endpoints",
    "EventEmitter": "_events",
    "Master": "_master",
    "PrimaryCluster": "_primary",
    "HandOffScheduler": "_scheduling",
    "SCHED_LEAST_CONN": "_settings",
    "SCHED_NONE": "_settings",
    "SCHED_REUSEPORT": "_settings",
    "SCHED_RR": "_settings",
    "BadSetting": "_settings",
    "NotAWorker": "_thisworker",
    "ThisWorker": "_thisworker",
    "WorkerCluster": "_thisworker",
    "ListeningAddress": "_workerapi",
    "WorkerGone": "_workerapi",
    "Worker": "_workers",
}

if TYPE_CHECKING:
    from ._cluster import cluster, makeCluster
    from ._endpoints import ListenSpec
    from ._events import EventEmitter
    from ._master import Master
    from ._primary import PrimaryCluster
    from ._scheduling import HandOffScheduler
    from ._settings import SCHED_LEAST_CONN, SCHED_NONE, SCHED_REUSEPORT, SCHED_RR, BadSetting
    from ._thisworker import NotAWorker, ThisWorker, WorkerCluster
    from ._workerapi import ListeningAddress, WorkerGone
    from ._workers import Worker


def __getattr__(name: str) -> Any:
    try:
        module = _PUBLIC[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})


__version__ = "0.1.0"

__all__ = [
    "SCHED_LEAST_CONN",
    "SCHED_NONE",
    "SCHED_REUSEPORT",
    "SCHED_RR",
    "BadSetting",
    "EventEmitter",
    "HandOffScheduler",
    "ListenSpec",
    "ListeningAddress",
    "Master",
    "NotAWorker",
    "PrimaryCluster",
    "ThisWorker",
    "Worker",
    "WorkerCluster",
    "WorkerGone",
    "__version__",
    "cluster",
    "makeCluster",
]
