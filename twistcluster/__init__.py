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
