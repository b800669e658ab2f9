# -*- test-case-name: tests.test_protocol -*-
"""
The control channel between the master and each worker: AMP commands that
mirror Node's internal cluster messages (C{online}, C{queryServer},
C{listening}, C{newconn} and its ack, C{close}, C{disconnect},
C{exitedAfterDisconnect}), and the users' own messages (L{Message}).

The channel is an AF_UNIX socketpair, so accepted sockets travel as
L{amp.Descriptor} (SCM_RIGHTS).
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred
from twisted.protocols import amp

from ._messages import MessageAssembler, encodeMessage

#: The file descriptor number of the control channel in a worker.
CONTROL_FD = 3


class JSON(amp.Argument):
    """
    An AMP argument holding any JSON-serialisable value (small: it must fit in
    one AMP value, 64 KiB).
    """

    def toString(self, inObject: Any) -> bytes:
        return json.dumps(inObject, separators=(",", ":")).encode("utf-8")

    def fromString(self, inString: bytes) -> Any:
        return json.loads(inString)


class Message(amp.Command):
    """
    Both ways: one chunk of a user message (JSON, cut in chunks under AMP's
    64 KiB value limit).  The answer to the last chunk means the message was
    delivered.
    """

    commandName = b"message"
    arguments = [(b"id", amp.Integer()), (b"chunk", amp.String()), (b"more", amp.Boolean())]
    response: list[tuple[bytes, amp.Argument]] = []


class ControlChannel(amp.AMP):
    """
    AMP on a control channel, without AMP's log line for every connection
    made and lost: the master logs each worker's lifecycle itself.

    Both ends send and receive user messages: L{sendMessage} and
    L{messageReceived}.
    """

    _lastMessageId = 0
    _assembler: MessageAssembler | None = None

    def sendMessage(self, value: Any) -> Deferred[None]:
        """
        Send C{value} (any JSON-serialisable value, of any size).

        @return: Fires once the other side has received all of it; fails if
            the channel is lost first.

        @raise TypeError: C{value} is not JSON-serialisable.
        """
        return self.sendChunks(encodeMessage(value))

    def sendChunks(self, chunks: list[bytes]) -> Deferred[None]:
        """
        Send a message already cut by L{encodeMessage} (a broadcast encodes
        once).
        """
        self._lastMessageId += 1
        for chunk in chunks[:-1]:
            # Only the last chunk's answer matters; a lost channel fails it too.
            self.callRemote(Message, id=self._lastMessageId, chunk=chunk, more=True).addErrback(
                lambda reason: None
            )
        delivered = self.callRemote(Message, id=self._lastMessageId, chunk=chunks[-1], more=False)
        return delivered.addCallback(lambda answer: None)

    @Message.responder
    def _messageChunk(self, id: int, chunk: bytes, more: bool) -> dict[str, Any]:
        if self._assembler is None:
            self._assembler = MessageAssembler()
        complete, value = self._assembler.chunkReceived(id, chunk, more)
        if complete:
            self.messageReceived(value)
        return {}

    def messageReceived(self, value: Any) -> None:
        """
        A whole user message arrived.  Overridden by each end.
        """

    def makeConnection(self, transport: Any) -> None:
        amp.BinaryBoxProtocol.makeConnection(self, transport)

    def connectionLost(self, reason: Any) -> None:
        amp.BinaryBoxProtocol.connectionLost(self, reason)
        self.transport = None


class ListenRefused(Exception):
    """
    The master could not, or would not, listen for a worker's query: the
    endpoint is not one it was configured with, or binding it failed.
    """


class Online(amp.Command):
    """
    W→M: the worker runs and its control channel is up.
    """

    commandName = b"online"
    arguments = [(b"workerId", amp.Integer()), (b"pid", amp.Integer())]
    requiresAnswer = False


class QueryServer(amp.Command):
    """
    W→M: a worker wants to listen.  The master creates the listening socket on
    the first query for a key and answers every query for it with the key and
    the bound address.
    """

    commandName = b"queryServer"
    arguments = [(b"spec", JSON()), (b"index", amp.Integer())]
    # fd: the bound socket itself, for handles a worker adopts (a shared
    # datagram socket); absent when the master keeps the socket (round-robin).
    response = [
        (b"key", amp.Unicode()),
        (b"sockname", JSON()),
        (b"fd", amp.Descriptor(optional=True)),
    ]
    errors = {ListenRefused: b"LISTEN_REFUSED"}


class Listening(amp.Command):
    """
    W→M: the worker serves C{key} now; the master may hand it connections.
    """

    commandName = b"listening"
    arguments = [(b"key", amp.Unicode()), (b"address", JSON())]
    requiresAnswer = False


class NewConn(amp.Command):
    """
    M→W: an accepted connection for C{key}.  The answer is the ack: the
    master keeps its copy of the socket until it arrives, then closes it
    (C{accepted}) or gives the socket to another worker (not C{accepted}).
    """

    commandName = b"newconn"
    arguments = [(b"key", amp.Unicode()), (b"fd", amp.Descriptor())]
    response = [(b"accepted", amp.Boolean())]


class Close(amp.Command):
    """
    W→M: the worker stopped serving C{key}; hand it nothing more for it.
    """

    commandName = b"close"
    arguments = [(b"key", amp.Unicode())]
    requiresAnswer = False


class Disconnect(amp.Command):
    """
    M→W: close every server, finish the open connections, then exit.
    """

    commandName = b"disconnect"
    arguments: list[tuple[bytes, amp.Argument]] = []
    response: list[tuple[bytes, amp.Argument]] = []


class ExitedAfterDisconnect(amp.Command):
    """
    W→M: the worker is leaving of its own will (not a crash): it closed its
    servers and finished its connections; after the answer it closes the
    channel and exits.
    """

    commandName = b"exitedAfterDisconnect"
    arguments: list[tuple[bytes, amp.Argument]] = []
    response: list[tuple[bytes, amp.Argument]] = []


class Ping(amp.Command):
    """
    M→W: a heartbeat, answered by the worker's reactor thread, so a blocked
    event loop fails it.
    """

    commandName = b"ping"
    arguments: list[tuple[bytes, amp.Argument]] = []
    response: list[tuple[bytes, amp.Argument]] = []
