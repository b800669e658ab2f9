# -*- test-case-name: tests.test_handoffchannel, tests.test_handoff -*-
"""
The master's end of a control channel, with a short path for the hottest
exchange of all: a C{NewConn} box and its ack.

The bytes on the wire are AMP's, the same as C{callRemote(NewConn)} and its
answer make; only the master's handling is shorter.  A hand-off is sent as
one C{write()} of a box built from its parts (no L{amp.Command}, no
L{amp.AmpBox}, no L{Deferred}), and the channel parses the boxes it receives
in one pass over each read (L{twistcluster._common.onepass}).  An answer
to a hand-off that has the usual shape (C{_answer} and C{accepted}, every
value C{True} or C{False}) goes straight to the hand-off's callback; any
other box, including an odd answer to a hand-off
(an error, another key, a malformed list), takes AMP's own way, through a
L{Deferred} made for it then, so it is handled exactly as
C{callRemote(NewConn)}'s answer would be.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.protocols.amp import AmpBox, Boolean, RemoteAmpError, UnknownRemoteError
from twisted.python.failure import Failure

from .._common.onepass import LISTED_FALSE, LISTED_TRUE, OnePassChannel
from .._common.protocol import NewConn
from .._common.twistedinternals import awaitAMPAnswer, failedAMPReason, nextAMPTag

#: Called with the answer (C{{"accepted": [bool, ...]}}) and the hand-off's
#: arguments.
Answered = Callable[..., object]
#: Called with the L{Failure} and the hand-off's arguments.
Failed = Callable[..., object]


class HandOffChannel(OnePassChannel):
    """
    A control channel that sends C{NewConn} boxes and takes their acks on a
    short path (L{sendNewConn}).
    """

    _log = Logger()

    def __init__(self) -> None:
        super().__init__()
        #: The hand-offs sent and not answered yet, by tag.
        self._handOffs: dict[bytes, tuple[Answered, Failed, tuple[Any, ...]]] = {}

    def sendNewConn(self, key: bytes, fds: list[int], answered: Answered, failed: Failed, *args: Any) -> None:
        """
        Send C{fds} for C{key} (UTF-8) in one C{NewConn} box.  Once the worker
        answers, C{answered(answer, *args)} is called with the answer as
        C{callRemote(NewConn)} would give it, or C{failed(reason, *args)} if
        it answers with an error or the channel is lost first (at once, if
        it is lost already).  The box and its descriptors go at once when
        nothing waits to be sent (L{twistcluster._common.descriptors.SendingChannelTransport.writeBox}).

        @raise ConnectionLost: The channel is closed.
        @raise ValueError: More descriptors than one box carries.
        """
        reason = failedAMPReason(self)
        if reason is not None:
            failed(reason, *args)
            return
        first = self.numberDescriptors(len(fds))
        ordinals = b",".join([b"%d" % ordinal for ordinal in range(first, first + len(fds))])
        tag = nextAMPTag(self)
        self._writeBox(
            b"".join(
                (
                    b"\x00\x04_ask",
                    len(tag).to_bytes(2, "big"),
                    tag,
                    b"\x00\x08_command\x00\x07newconn\x00\x03fds",
                    len(ordinals).to_bytes(2, "big"),
                    ordinals,
                    b"\x00\x03key",
                    len(key).to_bytes(2, "big"),
                    key,
                    b"\x00\x00",
                )
            ),
            fds,
        )
        self._handOffs[tag] = (answered, failed, args)

    def makeConnection(self, transport: Any) -> None:
        # The master's channel transport sends a box at once when it can.
        writeBox = getattr(transport, "writeBox", None)
        self._writeBox: Callable[[bytes, list[int]], None] = (
            writeBox if writeBox is not None else self._queueBox
        )
        super().makeConnection(transport)

    def _queueBox(self, data: bytes, fds: list[int]) -> None:
        """
        Write a box and its descriptors on a transport with no C{writeBox}.
        """
        transport: Any = self.transport
        for fd in fds:
            transport.sendFileDescriptor(fd)
        transport.write(data)

    def handOffsInFlight(self) -> int:
        """
        How many hand-off boxes wait for their answer.
        """
        return len(self._handOffs)

    def rawBoxReceived(self, box: dict[bytes, bytes]) -> None:
        tag = box.get(b"_answer")
        if tag is None:
            tag = box.get(b"_error")
        handOff = None if tag is None else self._handOffs.pop(tag, None)
        if handOff is not None:
            answer = _answer(box)
            if answer is not None:
                answered, failed, args = handOff
                try:
                    answered(answer, *args)
                except Exception:
                    # As a Deferred's unhandled error would be: logged.
                    self._log.failure("handling a hand-off's answer", Failure())
                return
            awaitAMPAnswer(self, tag, _answerFor(self, handOff))  # type: ignore[arg-type]
        self.ampBoxReceived(AmpBox(box))

    def failAllOutgoing(self, reason: Failure) -> None:
        super().failAllOutgoing(reason)
        handOffs, self._handOffs = self._handOffs, {}
        for _, failed, args in handOffs.values():
            try:
                failed(reason, *args)
            except Exception:
                self._log.failure("handling a lost hand-off", Failure())


def _flags() -> dict[bytes, str] | None:
    """
    C{NewConn}'s optional booleans in its answer, by wire name (L{None} if its
    answer has anything else beside C{accepted}: no short path then).
    """
    flags = {}
    for name, argument in NewConn.response:
        if name == b"accepted":
            continue
        if not (isinstance(argument, Boolean) and argument.optional):
            return None
        flags[name] = name.decode("ascii")
    return flags


_FLAGS = _flags()


def _answer(box: dict[bytes, bytes]) -> dict[str, Any] | None:
    """
    The answer to a hand-off as C{callRemote(NewConn)} gives it (C{accepted},
    and each optional flag or L{None}), or L{None} if the box is not of the
    usual shape.
    """
    if _FLAGS is None or b"_answer" not in box:
        return None
    value = box.get(b"accepted")
    accepted = None if value is None else _acks(value)
    if accepted is None:
        return None
    answer: dict[str, Any] = {"accepted": accepted}
    for identifier in _FLAGS.values():
        answer[identifier] = None
    if len(box) > 2:
        for name, flag in box.items():
            if name == b"_answer" or name == b"accepted":
                continue
            flagName = _FLAGS.get(name)
            if flagName is None or flag not in (b"True", b"False"):
                return None
            answer[flagName] = flag == b"True"
    return answer


def _acks(value: bytes) -> list[bool] | None:
    """
    The booleans of an answer's C{accepted} (AMP's C{ListOf(Boolean())}), or
    L{None} if it is not that.
    """
    count = len(value) // 6
    if value == LISTED_TRUE * count:
        return [True] * count
    accepted = []
    at, end = 0, len(value)
    while at < end:
        if value.startswith(LISTED_TRUE, at):
            accepted.append(True)
            at += 6
        elif value.startswith(LISTED_FALSE, at):
            accepted.append(False)
            at += 7
        else:
            return None
    return accepted


def _answerFor(channel: HandOffChannel, handOff: tuple[Answered, Failed, tuple[Any, ...]]) -> Deferred[Any]:
    """
    The L{Deferred} C{callRemote(NewConn)} would have made for a hand-off,
    with its callbacks: AMP's parsing of the answer and of the errors.
    """
    answered, failed, args = handOff

    def massageError(error: Failure) -> Failure:
        error.trap(RemoteAmpError)
        remote: Any = error.value
        reverseErrors: dict[bytes, type[Exception]] = getattr(NewConn, "reverseErrors", {})
        return Failure(reverseErrors.get(remote.errorCode, UnknownRemoteError)(remote.description))

    answer: Deferred[Any] = Deferred()
    answer.addCallback(NewConn.parseResponse, channel)
    answer.addErrback(massageError)
    answer.addCallbacks(answered, failed, callbackArgs=args, errbackArgs=args)
    return answer


def sendThroughCallRemote(
    callRemote: Callable[..., Deferred[Any]],
    key: bytes,
    fds: list[int],
    answered: Answered,
    failed: Failed,
    *args: Any,
) -> None:
    """
    L{HandOffChannel.sendNewConn}'s contract, through C{callRemote(NewConn)}
    (for a target whose channel is a plain
    L{twistcluster._common.protocol.ControlChannel}).
    """
    sent = callRemote(NewConn, key=key.decode("utf-8"), fds=fds)
    sent.addCallbacks(answered, failed, callbackArgs=args, errbackArgs=args)
