"""
Testing a protocol under a real cluster with trial: startCluster (from
twistcluster.testing) starts `twist cluster` on a free port, and the test's
cleanup stops it, passed or failed.

    python -m twisted.trial examples/test_echo_trial.py
"""

import os

from twisted.internet import defer, endpoints
from twisted.protocols.basic import LineReceiver
from twisted.trial import unittest

from twistcluster.testing import startCluster

HERE = os.path.dirname(os.path.abspath(__file__))


class LineClient(LineReceiver):
    delimiter = b"\n"

    def __init__(self):
        self.lines = defer.DeferredQueue()

    def lineReceived(self, line):
        self.lines.put(line)


class EchoClusterTests(unittest.TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def test_every_worker_echoes(self):
        from twisted.internet import reactor

        running = yield startCluster(self, "echo.EchoFactory", workers=2, cwd=HERE)
        self.assertEqual(len(running.pids), 2)
        host, port = running.address
        endpoint = endpoints.TCP4ClientEndpoint(reactor, host, port)
        for n in range(4):
            client = yield endpoints.connectProtocol(endpoint, LineClient())
            client.sendLine(b"hello %d" % n)
            line = yield client.lines.get()
            self.assertEqual(line, b"hello %d" % n)
            client.transport.loseConnection()
