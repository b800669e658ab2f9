"""
A factory module that takes a minute to import in a worker (the master,
which loads it too, is not kept waiting).
"""

import os
import time

from twisted.internet.protocol import Factory, Protocol

if os.environ.get("TWISTCLUSTER_WORKER_ID"):
    time.sleep(60)


class SlowFactory(Factory):
    protocol = Protocol
