# -*- test-case-name: tests.test_protocol -*-
"""
The control channel between the master and each worker: AMP commands that
mirror Node's internal cluster messages (C{online}, C{queryServer},
C{listening}, C{newconn} and its ack, C{close}, C{disconnect},
C{exitedAfterDisconnect}), and the users' own messages (L{Message}).

The channel is an AF_UNIX socketpair, so accepted sockets travel with the
boxes that name them (L{Descriptors}: SCM_RIGHTS, see
L{twistcluster._common.descriptors}).
"""

from __future__ import annotations

import json
import os
from typing import Any, cast

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IProtocolFactory, IReactorFDSet, IUNIXTransport
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.protocols import amp
from twisted.python.failure import Failure

from .descriptors import MAX_PER_BOX, DescriptorInbox, adoptReceivingEnd, adoptSendingEnd
from .messages import BadMessage, MessageAssembler, MessageTooLarge, encodeMessage
from .twistedinternals import UNIXServer

#: The file descriptor number of the control channel in a worker.
CONTROL_FD = 3

#: Seconds a worker whose control channel was lost (the master did not ask
#: it to leave) has to finish its connections and exit; the master kills it
#: a little after that.
CHANNEL_LOST_GRACE = 5.0


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
    Several file descriptors in one AMP value, named by their ordinals on
    the channel (see L{twistcluster._common.descriptors}), so one box can
    hand off a whole batch of sockets.  A box has at most one such value.
    On the receiving side each one that never arrived is L{None}.
    """

    def toStringProto(self, inObject: list[int], proto: Any) -> bytes:
        return b",".join(b"%d" % ordinal for ordinal in proto.sendDescriptors(inObject))

    def fromStringProto(self, inString: bytes, proto: Any) -> list[int | None]:
        if not inString:
            return []
        return proto.takeDescriptors([int(ordinal) for ordinal in inString.split(b",")])  # type: ignore[no-any-return]


def adoptControlChannel(reactor: IReactorFDSet, fd: int, factory: IProtocolFactory) -> UNIXServer | None:
    """
    Adopt the master's end of a control channel (see
    L{twistcluster._common.descriptors.SendingChannelTransport}).  C{fd} is
    duplicated; the caller closes it.
    """
    return adoptSendingEnd(reactor, fd, factory)


def adoptWorkerChannel(reactor: IReactorFDSet, fd: int, factory: IProtocolFactory) -> UNIXServer | None:
    """
    Adopt a worker's end of its control channel (see
    L{twistcluster._common.descriptors.ReceivingChannelTransport}).  C{fd} is
    duplicated; the caller closes it.
    """
    return adoptReceivingEnd(reactor, fd, factory)


class Message(amp.Command):
    """
    Both ways: one chunk of a user message (JSON, cut in chunks under AMP's
    64 KiB value limit).  The answer to the last chunk means the message was
    delivered; a message longer than the receiver takes, or chunks that do
    not make one, are answered with an error (the channel stays up).
    """

    commandName = b"message"
    arguments = [(b"id", amp.Integer()), (b"chunk", amp.String()), (b"more", amp.Boolean())]
    response = []
    errors = {MessageTooLarge: b"MESSAGE_TOO_LARGE", BadMessage: b"BAD_MESSAGE"}


class ControlChannel(amp.AMP):
    """
    AMP on a control channel, without AMP's log line for every connection
    made and lost: the master logs each worker's lifecycle itself.

    Both ends send and receive user messages: L{sendMessage} and
    L{messageReceived}.

    @ivar maxMessageSize: The longest user message taken from the other
        side, in bytes of JSON (L{None}: no bound).
    @ivar acceptsDescriptors: Whether descriptors from the other side are
        kept for the boxes that name them; otherwise each is closed as it
        arrives (and counted in L{unaskedDescriptors}).
    """

    _log = Logger()
    _lastMessageId = 0
    _assembler: MessageAssembler | None = None
    maxMessageSize: int | None = None
    acceptsDescriptors = True
    unaskedDescriptors = 0
    _sentDescriptors = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.descriptors = DescriptorInbox()

    # Descriptors

    def sendDescriptors(self, fds: list[int]) -> list[int]:
        """
        Queue C{fds} to go with the box being made.

        @return: Their ordinals, which name them in the box.
        @raise ConnectionLost: The channel is closed.
        @raise ValueError: More than one message holds.
        """
        first = self.numberDescriptors(len(fds))
        send = cast(IUNIXTransport, self.transport).sendFileDescriptor
        for fd in fds:
            send(fd)
        return list(range(first, first + len(fds)))

    @property
    def descriptorsSent(self) -> int:
        """
        How many descriptors this side sent on the channel: the ordinal of
        the next one.  The other side numbers them the same way, so a
        protocol that takes the channel over (an upgrade of the master)
        goes on from there (L{continueNumbering}).
        """
        return self._sentDescriptors

    def continueNumbering(self, sent: int) -> None:
        """
        Number the next descriptor sent C{sent}.
        """
        self._sentDescriptors = sent

    def numberDescriptors(self, count: int) -> int:
        """
        Number C{count} descriptors about to go with the box being made
        (which the caller sends).

        @return: The first one's ordinal; the others follow it.
        @raise ConnectionLost: The channel is closed.
        @raise ValueError: More than one message holds.
        """
        if self.transport is None:
            raise ConnectionLost("the control channel is closed")
        if count > MAX_PER_BOX:
            raise ValueError(f"{count} descriptors in one box (at most {MAX_PER_BOX})")
        first = self._sentDescriptors
        self._sentDescriptors = first + count
        return first

    def takeDescriptors(self, ordinals: list[int]) -> list[int | None]:
        """
        The descriptors a received box names (L{None} for each one that
        never arrived, or that this side does not take).
        """
        if not self.acceptsDescriptors:
            return [None] * len(ordinals)
        return self.descriptors.take(ordinals)

    def descriptorsReceived(self, fds: list[int], truncated: bool) -> None:
        if self.acceptsDescriptors:
            self.descriptors.received(fds, truncated)
        else:
            self._closeUnasked(fds)

    def fileDescriptorReceived(self, descriptor: int) -> None:
        # From a plain Twisted UNIX transport: one descriptor at a time, and
        # no word of truncation.
        self.descriptorsReceived([descriptor], False)

    def _closeUnasked(self, fds: list[int]) -> None:
        for fd in fds:
            os.close(fd)
        self.unaskedDescriptors += len(fds)

    # Messages

    def sendMessage(self, value: Any) -> Deferred[None]:
        """
        Send C{value} (any JSON-serialisable value, of any size).

        @return: Fires once the other side has received all of it; fails if
            the channel is lost first, or if the other side does not take a
            message that long (L{MessageTooLarge}).

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
            self._assembler = MessageAssembler(self.maxMessageSize)
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
        try:
            amp.BinaryBoxProtocol.connectionLost(self, reason)
        finally:
            self.transport = None
            self.descriptors.closeAll()


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
    answer carries the listening socket (first of C{fds}), which the worker
    adopts and closes; under C{reuseport} it is bound but not listening yet,
    and the worker listens on it with C{listenBacklog} itself, so no socket
    joins the port's C{SO_REUSEPORT} group before a worker accepts on it.
    Otherwise the master hands it connections (C{NewConn}), and
    C{reportClosed} asks it to tell when they end (C{ConnectionsClosed}).
    Under C{none} (TCP) C{fds} also carries the socket's table of open
    connections (see L{twistcluster._common.balance}), and C{balanceSlot} is
    the worker's slot in it.
    """

    commandName = b"queryServer"
    arguments = [(b"spec", JSON()), (b"index", amp.Integer())]
    response = [
        (b"key", amp.Unicode()),
        (b"sockname", JSON()),
        (b"fds", Descriptors(optional=True)),
        (b"listenBacklog", amp.Integer(optional=True)),
        (b"reportClosed", amp.Boolean(optional=True)),
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

    C{outOfDescriptors}: the worker could not take some of them for want of
    descriptors (the kernel dropped them on the way, or it could not adopt
    them); those are refused, and the master gives them to another worker
    and leaves this one be for a moment.
    """

    commandName = b"newconn"
    arguments = [(b"key", amp.Unicode()), (b"fds", Descriptors())]
    response = [(b"accepted", amp.ListOf(amp.Boolean())), (b"outOfDescriptors", amp.Boolean(optional=True))]


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
