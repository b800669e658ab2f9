# -*- test-case-name: tests.test_protocol -*-
"""
The control channel between the master and each worker: AMP commands that
mirror Node's internal cluster messages (C{online}, C{queryServer},
C{listening}, C{newconn} and its ack, C{close}, C{disconnect}).

The channel is an AF_UNIX socketpair, so accepted sockets travel as
L{amp.Descriptor} (SCM_RIGHTS).
"""

from __future__ import annotations

import json
from typing import Any

from twisted.protocols import amp

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


class ControlChannel(amp.AMP):
    """
    AMP on a control channel, without AMP's log line for every connection
    made and lost: the master logs each worker's lifecycle itself.
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

    Where the worker accepts for itself (C{none}, C{reuseport}, UDP), the
    answer carries the listening socket (C{fd}), which the worker adopts and
    closes; otherwise the master hands it connections (C{NewConn}), and
    C{reportClosed} asks it to tell when they end (C{ConnectionsClosed}).
    """

    commandName = b"queryServer"
    arguments = [(b"spec", JSON()), (b"index", amp.Integer())]
    response = [
        (b"key", amp.Unicode()),
        (b"sockname", JSON()),
        (b"fd", amp.Descriptor(optional=True)),
        (b"reportClosed", amp.Boolean(optional=True)),
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
    arguments: list[tuple[bytes, amp.Argument]] = []
    response: list[tuple[bytes, amp.Argument]] = []


class ExitedAfterDisconnect(amp.Command):
    """
    W→M: the worker is leaving of its own will (not a crash).
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
