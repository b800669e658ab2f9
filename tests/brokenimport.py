"""
A factory module that imports in the master but fails to in every worker
(as a module does whose dependency only the master's environment has).
"""

import os

from twisted.internet.protocol import Factory, Protocol

if os.environ.get("TWISTCLUSTER_WORKER_ID"):
    raise ImportError("deliberately broken in the workers")


class BrokenFactory(Factory):
    protocol = Protocol
