# -*- test-case-name: tests.test_cluster_api, tests.test_packaging -*-
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

from ._version import __version__

#: Where each public name lives.  Each is imported on first use (PEP 562):
#: C{twist cluster}'s master imports only what it runs, which lets it keep
#: pyOpenSSL out (see L{twistcluster._cli.options.leaveOutTLS}).
_PUBLIC = {
    "cluster": "_api.cluster",
    "makeCluster": "_api.cluster",
    "ListenSpec": "_common.endpoints",
    "EventEmitter": "_common.events",
    "Master": "_master.service",
    "PrimaryCluster": "_api.primary",
    "HandOffScheduler": "_master.scheduling",
    "SCHED_LEAST_CONN": "_common.policies",
    "SCHED_NONE": "_common.policies",
    "SCHED_REUSEPORT": "_common.policies",
    "SCHED_RR": "_common.policies",
    "BadSetting": "_api.settings",
    "NotAWorker": "_api.thisworker",
    "ThisWorker": "_api.thisworker",
    "WorkerCluster": "_api.thisworker",
    "ListeningAddress": "_api.workerface",
    "WorkerGone": "_api.workerface",
    "Worker": "_api.workerface",
}

if TYPE_CHECKING:
    from ._api.cluster import cluster, makeCluster
    from ._api.primary import PrimaryCluster
    from ._api.settings import BadSetting
    from ._api.thisworker import NotAWorker, ThisWorker, WorkerCluster
    from ._api.workerface import ListeningAddress, Worker, WorkerGone
    from ._common.endpoints import ListenSpec
    from ._common.events import EventEmitter
    from ._common.policies import SCHED_LEAST_CONN, SCHED_NONE, SCHED_REUSEPORT, SCHED_RR
    from ._master.scheduling import HandOffScheduler
    from ._master.service import Master


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
