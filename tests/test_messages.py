"""
User messages on the control channel: JSON of any size, in chunks under AMP's
64 KiB value limit, over a real AMP conversation (in memory).
"""

from __future__ import annotations

from typing import Any

from twisted.protocols import amp
from twisted.test.iosim import connectedServerAndClient
from twisted.trial.unittest import SynchronousTestCase

from twistcluster._common.messages import CHUNK_SIZE, BadMessage, MessageAssembler, encodeMessage
from twistcluster._common.protocol import ControlChannel


class Inbox(ControlChannel):
    def __init__(self) -> None:
        super().__init__()
        self.received: list[Any] = []

    def messageReceived(self, value: Any) -> None:
        self.received.append(value)


class CodecTests(SynchronousTestCase):
    def test_chunksUnderAMPsLimit(self) -> None:
        chunks = encodeMessage({"payload": "x" * 800_000})
        self.assertEqual(len(chunks), 14)
        self.assertTrue(all(len(c) <= CHUNK_SIZE < amp.MAX_VALUE_LENGTH for c in chunks))
        assembler = MessageAssembler()
        results = [assembler.chunkReceived(1, c, i < len(chunks) - 1) for i, c in enumerate(chunks)]
        self.assertEqual(results[-1], (True, {"payload": "x" * 800_000}))
        self.assertTrue(all(r == (False, None) for r in results[:-1]))

    def test_notJSON(self) -> None:
        self.assertRaises(TypeError, encodeMessage, {"socket": object()})
        self.assertRaises(ValueError, encodeMessage, float("nan"))

    def test_interleavedChunksRefused(self) -> None:
        assembler = MessageAssembler()
        assembler.chunkReceived(1, b'{"a":', True)
        self.assertRaises(BadMessage, assembler.chunkReceived, 2, b"1", False)
        # The next message starts clean.
        self.assertEqual(assembler.chunkReceived(3, b"[1]", False), (True, [1]))


class ChannelTests(SynchronousTestCase):
    def test_largeMessagesBothWays(self) -> None:
        server, client, pump = connectedServerAndClient(Inbox, Inbox)
        big = {"payload": "é" * 400_000, "n": list(range(10_000))}
        delivered = client.sendMessage(big)
        server.sendMessage("small")
        client.sendMessage(None)
        pump.flush()
        self.assertIsNone(self.successResultOf(delivered))
        self.assertEqual(server.received, [big, None])
        self.assertEqual(client.received, ["small"])

    def test_lostChannelFailsDelivery(self) -> None:
        server, client, pump = connectedServerAndClient(Inbox, Inbox)
        server.transport.loseConnection()
        pump.flush()
        self.failureResultOf(client.sendMessage({"n": 1}))
