"""
twistcluster: Node.js-style process clusters for Twisted.

One master process owns the listening sockets; N worker processes run the
user's protocols.  The master accepts each connection and hands the socket
itself to a worker over an AMP control channel.
"""

from ._endpoints import ListenSpec
from ._master import Master
from ._scheduling import HandOffScheduler

__version__ = "0.1.0"

__all__ = ["ListenSpec", "Master", "HandOffScheduler", "__version__"]
