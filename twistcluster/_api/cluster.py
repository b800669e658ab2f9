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
from typing import TYPE_CHECKING

from .._common.environment import WORKER_ID_VARIABLE

if TYPE_CHECKING:
    from .._common.reactors import IClusterReactor
    from .primary import PrimaryCluster
    from .thisworker import WorkerCluster


def makeCluster(
    environ: Mapping[str, str] | None = None, reactor: IClusterReactor | None = None
) -> PrimaryCluster | WorkerCluster:
    """
    The cluster object for a process with C{environ}.  Each face imports
    only its own side: a worker never loads the primary's engine.
    """
    environ = os.environ if environ is None else environ
    if WORKER_ID_VARIABLE in environ:
        from .thisworker import WorkerCluster

        return WorkerCluster(environ[WORKER_ID_VARIABLE], reactor)
    from .primary import PrimaryCluster

    return PrimaryCluster(reactor, environ)


cluster = makeCluster()
if WORKER_ID_VARIABLE in os.environ:
    cluster.activateWithReactor()  # type: ignore[union-attr]
