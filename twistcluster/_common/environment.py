# -*- test-case-name: tests.test_cluster_api -*-
"""
What a master puts in each worker's environment (a contract: users' code
reads these).
"""

from __future__ import annotations

#: The worker's id (Node's C{NODE_UNIQUE_ID}): 1, 2, ..., never reused.  A
#: process whose environment has it is a worker.
WORKER_ID_VARIABLE = "TWISTCLUSTER_WORKER_ID"

#: The command line's worker's slot (PM2's C{NODE_APP_INSTANCE}): 0..N-1,
#: kept by its replacement.
WORKER_SLOT_VARIABLE = "TWISTCLUSTER_WORKER_SLOT"
