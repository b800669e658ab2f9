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
import socket
import struct
from errno import EAGAIN, ENOBUFS
from typing import Any

from twisted.internet import error, main
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IProtocolFactory, IReactorFDSet
from twisted.internet.protocol import connectionDone
from twisted.protocols import amp
from twisted.python import sendmsg
from twisted.python.compat import lazyByteSlice
from twisted.python.failure import Failure
from twisted.python.util import untilConcludes

from .messages import MessageAssembler, encodeMessage
from .twistedinternals import (
    UNIXServer,
    adoptUNIXConnection,
    descriptorSender,
    descriptorTaker,
    queuedDescriptors,
    writeWithoutDescriptors,
)

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


class Descriptors(amp.Argument):
    """
    Several file descriptors in one AMP value: each travels as
    L{amp.Descriptor} sends one (SCM_RIGHTS, matched up by a per-connection
    ordinal), so one box can hand off a whole batch of sockets.
    """

    def toStringProto(self, inObject: list[int], proto: Any) -> bytes:
        send = descriptorSender(proto)
        return b",".join(b"%d" % send(fd) for fd in inObject)

    def fromStringProto(self, inString: bytes, proto: Any) -> list[int]:
        if not inString:
            return []
        take = descriptorTaker(proto)
        return [take(int(ordinal)) for ordinal in inString.split(b",")]


#: The most descriptors Linux takes in one SCM_RIGHTS message (SCM_MAX_FD).
_MAX_FDS_PER_MESSAGE = 253


class _BatchingUNIXServer(UNIXServer):
    """
    A UNIX transport that sends all its queued file descriptors in one
    SCM_RIGHTS message riding on one byte.

    Twisted's sends each descriptor in a sendmsg of its own, and the kernel
    never merges messages that carry descriptors, so the receiver needs one
    recvmsg (one turn of its reactor) per descriptor.  Here a batch of sockets
    handed off together costs one sendmsg and one recvmsg; the receiver is any
    Twisted UNIX transport, which takes several descriptors per message.
    """

    def writeSomeData(self, data: Any) -> Any:
        queued = queuedDescriptors(self)
        if not queued:
            return writeWithoutDescriptors(self, data)
        if not data:
            return error.FileDescriptorOverrun()
        sent = 0
        while queued and sent < len(data):
            batch = queued[:_MAX_FDS_PER_MESSAGE]
            try:
                untilConcludes(
                    sendmsg.sendmsg,
                    self.socket,
                    data[sent : sent + 1],
                    [(socket.SOL_SOCKET, sendmsg.SCM_RIGHTS, struct.pack(f"{len(batch)}i", *batch))],
                )
            except OSError as e:
                return sent if e.errno in (EAGAIN, ENOBUFS) else main.CONNECTION_LOST
            del queued[: len(batch)]
            sent += 1
        if queued:
            return sent
        result = writeWithoutDescriptors(self, lazyByteSlice(data, sent))
        return sent + result if isinstance(result, int) else result


def adoptControlChannel(reactor: IReactorFDSet, fd: int, factory: IProtocolFactory) -> UNIXServer | None:
    """
    Adopt the master's end of a control channel, as
    C{reactor.adoptStreamConnection(fd, AF_UNIX, factory)} would, with a
    transport that sends a batch of descriptors in one message.  C{fd} is
    duplicated; the caller closes it.
    """
    return adoptUNIXConnection(_BatchingUNIXServer, reactor, fd, factory)


class Message(amp.Command):
    """
    Both ways: one chunk of a user message (JSON, cut in chunks under AMP's
    64 KiB value limit).  The answer to the last chunk means the message was
    delivered.
    """

    commandName = b"message"
    arguments = [(b"id", amp.Integer()), (b"chunk", amp.String()), (b"more", amp.Boolean())]
    response = []


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
        delivered: Deferred[dict[str, Any]] = self.callRemote(
            Message, id=self._lastMessageId, chunk=chunks[-1], more=False
        )
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

    def connectionLost(self, reason: Failure = connectionDone) -> None:
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

    Where the worker accepts for itself (C{none}, C{reuseport}, UDP), the
    answer carries the listening socket (C{fd}), which the worker adopts and
    closes; otherwise the master hands it connections (C{NewConn}), and
    C{reportClosed} asks it to tell when they end (C{ConnectionsClosed}).
    Under C{none} (TCP) it also carries the socket's table of open
    connections (C{balance}, see L{twistcluster._common.balance}) and the worker's
    slot in it.
    """

    commandName = b"queryServer"
    arguments = [(b"spec", JSON()), (b"index", amp.Integer())]
    response = [
        (b"key", amp.Unicode()),
        (b"sockname", JSON()),
        (b"fd", amp.Descriptor(optional=True)),
        (b"reportClosed", amp.Boolean(optional=True)),
        (b"balance", amp.Descriptor(optional=True)),
        (b"balanceSlot", amp.Integer(optional=True)),
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
    M→W: accepted connections for C{key}, every one the master accepted for
    this worker in one turn of its reactor (usually one; a batch under load,
    so the cost of a box is shared).  The answer is the ack, one boolean per
    socket: the master keeps its copy of each socket until it arrives, then
    closes it (accepted) or gives it to another worker (refused).
    """

    commandName = b"newconn"
    arguments = [(b"key", amp.Unicode()), (b"fds", Descriptors())]
    response = [(b"accepted", amp.ListOf(amp.Boolean()))]


class ConnectionsClosed(amp.Command):
    """
    W→M: C{count} connections the master handed over for C{key} have ended
    (sent in batches, at most every few tens of milliseconds, and only when
    C{QueryServer}'s answer asked for it).
    """

    commandName = b"connectionsClosed"
    arguments = [(b"key", amp.Unicode()), (b"count", amp.Integer())]
    requiresAnswer = False


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
    arguments = []
    response = []


class ExitedAfterDisconnect(amp.Command):
    """
    W→M: the worker is leaving of its own will (not a crash): it closed its
    servers and finished its connections; after the answer it closes the
    channel and exits.
    """

    commandName = b"exitedAfterDisconnect"
    arguments = []
    response = []


class Ping(amp.Command):
    """
    M→W: a heartbeat, answered by the worker's reactor thread, so a blocked
    event loop fails it.
    """

    commandName = b"ping"
    arguments = []
    response = []
