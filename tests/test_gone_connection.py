"""
A handed-over connection that has already ended (its peer reset it while it
waited in the master's queue, or a worker that died served it to its end
before its ack reached the master, and the master handed it on): the worker
takes it without a word, so it is not bounced to every other worker, each
logging a traceback.  Seen with HAProxy in front of a host whose workers were
all killed at once (tests.test_haproxy).
"""

from __future__ import annotations

import socket
import struct

from twisted.internet.protocol import Factory, Protocol
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from twistcluster._common.endpoints import ListenSpec
from twistcluster._worker.clusterport import ClusterPort, ListenIndexes


class NoChannel:
    def __init__(self) -> None:
        self.gone: list[object] = []

    def connectionOpened(self, port: object, protocol: object) -> None:
        raise AssertionError("nothing was served")

    def connectionGone(self, port: object) -> None:
        self.gone.append(port)


class GoneConnectionTests(SynchronousTestCase):
    def resetConnection(self) -> socket.socket:
        """
        The server side of a connection its client reset.
        """
        listening = socket.create_server(("127.0.0.1", 0))
        self.addCleanup(listening.close)
        client = socket.create_connection(listening.getsockname())
        server, _ = listening.accept()
        self.addCleanup(server.close)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
        with self.assertRaises(OSError):
            server.getpeername()
        return server

    def test_takenQuietly(self) -> None:
        from twisted.internet import reactor

        events: list[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        channel = NoChannel()
        port = ClusterPort(
            reactor, channel, ListenIndexes(), ListenSpec.forTCP(0), Factory.forProtocol(Protocol)
        )
        server = self.resetConnection()
        self.assertTrue(port.connectionReceived(server.fileno()))
        self.assertEqual([e for e in events if e.get("log_level") and e["log_level"].name != "debug"], [])
        # Counted (tests.test_resets: a worker says how many, now and then).
        self.assertEqual(channel.gone, [port])
