# -*- test-case-name: tests.test_cluster_api -*-
"""
The C{cluster} object: Node's C{cluster} module, in Python.

Like Node's C{lib/cluster.js}, it is the primary's face or a worker's,
chosen by the environment: a process whose environment has
C{TWISTCLUSTER_WORKER_ID} (Node's C{NODE_UNIQUE_ID}) is a worker.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from .primary import PrimaryCluster
from .thisworker import WORKER_ID_VARIABLE, WorkerCluster


def makeCluster(
    environ: Mapping[str, str] | None = None, reactor: Any = None
) -> PrimaryCluster | WorkerCluster:
    """
    The cluster object for a process with C{environ}.
    """
    environ = os.environ if environ is None else environ
    if WORKER_ID_VARIABLE in environ:
        return WorkerCluster(environ[WORKER_ID_VARIABLE], reactor)
    return PrimaryCluster(reactor, environ)


cluster = makeCluster()
if isinstance(cluster, WorkerCluster):
    cluster.activateWithReactor()
