"""
What the many-hosts tests serve (resolved as tests.hostapps.NAME from the
project root): each answer names the host (C{$TEST_HOST}, inherited from the
master), the worker, and the client's address as the application sees it.
"""

import os

from twisted.internet.protocol import Factory, Protocol
from twisted.web.resource import Resource
from twisted.web.server import Site

HOST = os.environ.get("TEST_HOST", "?")
WORKER_ID = os.environ.get("TWISTCLUSTER_WORKER_ID", "?")


def _who(address) -> bytes:
    return f"host={HOST} worker={WORKER_ID} client={address.host}:{address.port}\n".encode()


class WhoServes(Resource):
    """
    A twisted.web resource: C{request.getClientAddress()}.
    """

    isLeaf = True

    def render_GET(self, request) -> bytes:
        return _who(request.getClientAddress())


site = Site(WhoServes())


class PeerOnFirstLine(Protocol):
    """
    A plain protocol: C{transport.getPeer()} once the first line has arrived
    (behind C{haproxy:}, the PROXY header comes before it), then close.
    """

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(_who(self.transport.getPeer()))
        self.transport.loseConnection()


plain = Factory.forProtocol(PeerOnFirstLine)
