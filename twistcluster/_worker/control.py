# -*- test-case-name: tests.test_workercontrol, tests.test_handoff, tests.test_statistics -*-
"""
The worker's end of its control channel (fd 3): the AMP responders for what
the master asks of a worker (take a hand-off, leave, answer a ping, count
its connections, collect its metrics), each passed on to the worker's
runtime.  The master's end is L{twistcluster._master.control}.
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.protocols.amp import UNKNOWN_ERROR_CODE, AmpBox
from twisted.python.failure import Failure

from .._common.onepass import LISTED_FALSE, LISTED_TRUE, OnePassChannel
from .._common.protocol import Disconnect, NewConn, Ping
from .._common.statistics import CollectMetrics, WorkerStatistics
from .intake import HandOffIntake
from .metrics import encodedFamilies
from .tracking import OpenConnections


class Controlled(Protocol):
    """
    What the worker's end of the channel needs of the worker's runtime.

    @ivar intake: Takes the connections the master hands over.
    @ivar openConnections: The connections the worker serves.
    """

    intake: HandOffIntake
    openConnections: OpenConnections

    def disconnect(self) -> None:
        """
        The master asked the worker to leave.
        """

    def messageReceived(self, value: Any) -> None:
        """
        A user message from the master.
        """

    def controlLost(self) -> None:
        """
        The channel closed.
        """


class WorkerControl(OnePassChannel):
    """
    The worker's end of the control channel.

    A C{NewConn} box of the usual shape (C{_ask}, C{_command}, C{fds},
    C{key}) takes a short path: its sockets go to the intake and its answer,
    the bytes AMP's responder would send, is written at once (after each
    read, the answers of all its boxes in one write, ahead of anything else
    the read answers); every other box takes AMP's way.
    """

    _log = Logger()

    def __init__(self, runtime: Controlled) -> None:
        super().__init__()
        self._runtime = runtime
        #: Answers to hand-offs of this read, not written yet.
        self._acks: list[bytes] = []

    def dataReceived(self, data: bytes) -> None:
        try:
            super().dataReceived(data)
        finally:
            self._writeAcks()

    def rawBoxReceived(self, box: dict[bytes, bytes]) -> None:
        if box.get(b"_command") == b"newconn" and len(box) == 4 and b"_ask" in box:
            if self._shortNewConn(box):
                return
        # Whatever AMP answers comes after the answers before it.
        self._writeAcks()
        super().rawBoxReceived(box)

    def _shortNewConn(self, box: dict[bytes, bytes]) -> bool:
        """
        Take a C{NewConn} box on the short path.

        @return: Whether it was taken (else, a box AMP's way must judge).
        """
        try:
            key = box[b"key"].decode("utf-8")
            listed = box[b"fds"]
            ordinals = [int(ordinal) for ordinal in listed.split(b",")] if listed else []
        except (KeyError, ValueError):
            return False
        tag = box[b"_ask"]
        fds = self.takeDescriptors(ordinals)
        try:
            answer = self._runtime.intake.take(key, fds)
        except Exception:
            # As AMP meets a responder's unexpected error: logged, an error
            # answer, and the channel closed.
            self._log.failure("while receiving response to command")
            self._acks.append(_errorAnswer(tag))
            self._writeAcks()
            if self.transport is not None:
                self.transport.loseConnection()
            return True
        self._acks.append(_answerBytes(tag, answer))
        return True

    def _writeAcks(self) -> None:
        """
        Write the answers not written yet, in one write, at once if the
        channel's transport can (L{twistcluster._common.descriptors.ReceivingChannelTransport.writeAtOnce}).
        """
        if not self._acks:
            return
        data = b"".join(self._acks)
        self._acks = []
        transport = self.transport
        if transport is None:
            return
        writeAtOnce = getattr(transport, "writeAtOnce", None)
        if writeAtOnce is not None:
            writeAtOnce(data)
        else:
            transport.write(data)

    @NewConn.responder
    def newConn(self, key: str, fds: list[int | None]) -> dict[str, Any]:
        return self._runtime.intake.take(key, fds)

    @Disconnect.responder
    def disconnect(self) -> dict[str, Any]:
        self._runtime.disconnect()
        return {}

    @Ping.responder
    def ping(self) -> dict[str, Any]:
        return {}

    @WorkerStatistics.responder
    def statistics(self) -> dict[str, Any]:
        connections = self._runtime.openConnections
        return {"connectionsOpen": len(connections), "connectionsTotal": connections.total}

    @CollectMetrics.responder
    def collectMetrics(self, maxBytes: int) -> dict[str, Any]:
        return {"families": encodedFamilies(maxBytes)}

    def messageReceived(self, value: Any) -> None:
        self._runtime.messageReceived(value)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._runtime.controlLost()
        super().connectionLost(reason)


def _answerBytes(tag: bytes, answer: dict[str, Any]) -> bytes:
    """
    The box AMP sends for C{NewConn}'s C{answer} to the command C{tag}.
    """
    accepted = b"".join([LISTED_TRUE if taken else LISTED_FALSE for taken in answer["accepted"]])
    parts = [
        b"\x00\x07_answer",
        len(tag).to_bytes(2, "big"),
        tag,
        b"\x00\x08accepted",
        len(accepted).to_bytes(2, "big"),
        accepted,
    ]
    short = answer.get("outOfDescriptors")
    if short is not None:
        parts.append(
            b"\x00\x10outOfDescriptors\x00\x04True" if short else b"\x00\x10outOfDescriptors\x00\x05False"
        )
    parts.append(b"\x00\x00")
    return b"".join(parts)


def _errorAnswer(tag: bytes) -> bytes:
    """
    The error box AMP sends when a responder fails unexpectedly.
    """
    box = AmpBox(
        {b"_error": tag, b"_error_code": UNKNOWN_ERROR_CODE, b"_error_description": b"Unknown Error"}
    )
    data: bytes = box.serialize()
    return data
