# -*- test-case-name: tests.test_control, tests.test_rogue -*-
"""
The master's end of one worker's control channel.

A worker runs user code, so the master trusts what comes over the channel no
further than it must; one worker's misbehaviour costs that worker, never
the master or the others:

    - bytes that are not AMP (or an answer to a question never asked), and
      a box longer than any the protocol makes (L{MAX_BOX_BYTES}, checked
      as the bytes arrive): the master logs one line, closes the channel,
      and the worker is killed and replaced.
    - a command the master does not know, or one it cannot take (bad
      arguments): an error answer, one line in the log; the channel stays.
    - a user message longer than C{maxMessageSize} (dropped chunk by chunk
      as it arrives, never held): an error answer; the channel stays.
    - descriptors: the master never asks a worker for any, so each is
      closed as it arrives.
    - the channel closed while the master still counts on the worker (it
      was not asked to leave, nor did it say it leaves): it is killed if it
      has not exited L{CHANNEL_LOST_GRACE} seconds later (it exits on its
      own by then), and only then are the sockets it never acknowledged
      given to another worker, so no socket is ever read by two processes.

(Hand-offs it never acknowledges are the monitor's business:
L{twistcluster._master.monitor}.)
"""

from __future__ import annotations

from functools import partial
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.protocols import amp
from twisted.python.failure import Failure

from .._common.endpoints import ListenSpec
from .._common.protocol import (
    CHANNEL_LOST_GRACE,
    Close,
    ConnectionsClosed,
    ExitedAfterDisconnect,
    Listening,
    ListenRefused,
    Online,
    QueryServer,
)
from .._common.twistedinternals import hasUnsentData, queuedDescriptors
from .handles import Handles
from .handoffchannel import HandOffChannel
from .worker import Worker

#: The longest box a worker may send, in bytes: a message chunk (60 KiB)
#: and its keys, with room to spare.  No command makes a longer one.
MAX_BOX_BYTES = 128 * 1024
#: The longest user message a worker of C{twist cluster} may send: the
#: command line uses none itself (an application's FACTORY may send small
#: ones with C{cluster.worker.send}).  The API's primary takes
#: C{settings['maxMessageSize']}.
COMMAND_LINE_MAX_MESSAGE = 64 * 1024


class MasterControl(HandOffChannel):
    """
    The master's end of one worker's control channel.

    @ivar violation: Why the master closed the channel, if the worker broke
        the protocol.
    """

    _log = Logger()
    acceptsDescriptors = False

    def __init__(
        self,
        worker: Worker,
        handles: Handles,
        clock: IReactorTime | None = None,
        maxMessageSize: int | None = COMMAND_LINE_MAX_MESSAGE,
    ) -> None:
        super().__init__()
        self._worker = worker
        self._handles = handles
        self._clock = clock
        self.maxMessageSize = maxMessageSize
        self.violation: str | None = None
        #: Bytes received since the last whole box, counted per read (the
        #: rest of a read that ends a box is not counted: a box is caught
        #: within two reads of passing the bound).
        self._sinceBox = 0
        self._unknownCommands = 0
        self._killIfStill: IDelayedCall | None = None
        #: The master's calls not answered yet (an upgrade waits for none).
        self._unanswered = 0

    # Guarding the channel

    def dataReceived(self, data: bytes) -> None:
        if self.violation is not None:
            return
        try:
            if self._sinceBox > MAX_BOX_BYTES:
                raise ValueError(f"a box longer than {MAX_BOX_BYTES} bytes")
            self._sinceBox += len(data)
            super().dataReceived(data)
        except Exception as e:
            self._violated(f"{type(e).__name__}: {e}")

    def wholeBoxReceived(self) -> None:
        self._sinceBox = 0

    def lengthLimitExceeded(self, length: int) -> None:
        self._violated(f"a key of {length} bytes")

    def _violated(self, why: str) -> None:
        self.violation = why
        self._log.error(
            "worker {workerId} (pid {pid}) broke the control protocol ({why}); closing its channel",
            workerId=self._worker.id,
            pid=self._worker.pid,
            why=why,
        )
        if self.transport is not None:
            self.transport.loseConnection()

    def locateResponder(self, name: bytes) -> Any:
        responder = super().locateResponder(name)
        if responder is None:
            self._unknownCommands += 1
            if self._unknownCommands == 1:
                self._log.warn(
                    "worker {workerId} sent an unknown command {command!r}; answering each with an error",
                    workerId=self._worker.id,
                    command=name,
                )
            return None
        return partial(self._guarded, responder, name)

    def _guarded(self, responder: Any, name: bytes, box: amp.AmpBox) -> Deferred[Any]:
        """
        Run C{responder}: anything it fails with, other than the errors its
        command declares, becomes an error answer and one log line, never
        the end of the channel (AMP's own rule for an unexpected error).
        """
        return maybeDeferred(responder, box).addErrback(self._refuse, name, b"_ask" in box)

    def _refuse(self, reason: Failure, name: bytes, answered: bool) -> Failure | None:
        if not reason.check(amp.RemoteAmpError):
            description = f"{type(reason.value).__name__}: {reason.getErrorMessage()}"
            self._log.warn(
                "worker {workerId} sent a {command} the master could not take: {error}",
                workerId=self._worker.id,
                command=name.decode("ascii", "replace"),
                error=description,
            )
            reason = Failure(amp.RemoteAmpError(b"REFUSED", description.encode("utf-8", "replace")))
        # Unanswered, AMP would drop the channel for it.
        return reason if answered else None

    def _closeUnasked(self, fds: list[int]) -> None:
        if not self.unaskedDescriptors:
            self._log.warn(
                "worker {workerId} sent descriptors the master did not ask for; closing each as it arrives",
                workerId=self._worker.id,
            )
        super()._closeUnasked(fds)

    # Quiet (an upgrade hands the channel over only then)

    def callRemote(self, commandType: type[amp.Command], *a: Any, **kw: Any) -> Deferred[Any] | None:
        answer: Deferred[Any] | None = super().callRemote(commandType, *a, **kw)
        if answer is not None:
            self._unanswered += 1
            answer.addBoth(self._answered)
        return answer

    def _answered(self, result: object) -> object:
        self._unanswered -= 1
        return result

    def isQuiet(self) -> bool:
        """
        Has every call of the master's been answered, everything it wrote
        been sent, and no message of the worker's half received (its chunks
        are not carried across an upgrade)?
        """
        transport: Any = self.transport
        if transport is None:
            return True
        return (
            not self._unanswered
            and not self.handOffsInFlight()
            and not hasUnsentData(transport)
            and not queuedDescriptors(transport)
            and not (self._assembler is not None and self._assembler.assembling)
        )

    # Responders

    @Online.responder
    def online(self, workerId: int, pid: int) -> dict[str, Any]:
        self._worker.saidOnline()
        return {}

    @QueryServer.responder
    def queryServer(self, spec: dict[str, Any], index: int) -> dict[str, Any]:
        if not self._worker.acceptsListens():
            raise ListenRefused(f"worker {self._worker.id} is {self._worker.state}")
        try:
            listenSpec = ListenSpec.fromJSON(spec)
        except TypeError as e:
            raise ListenRefused(f"malformed listen: {e}") from e
        return self._handles.query(listenSpec, index).answer(self._worker)

    @Listening.responder
    def listening(self, key: str, address: Any) -> dict[str, Any]:
        self._worker.listeningOn(key, address)
        return {}

    @ExitedAfterDisconnect.responder
    def exitedAfterDisconnect(self) -> dict[str, Any]:
        self._worker.exitedAfterDisconnect = True
        return {}

    def messageReceived(self, value: Any) -> None:
        self._worker.messageReceived(value)

    @ConnectionsClosed.responder
    def connectionsClosed(self, key: str, count: int) -> dict[str, Any]:
        self._handles.connectionsClosed(self._worker, key, count)
        return {}

    @Close.responder
    def close(self, key: str) -> dict[str, Any]:
        self._handles.workerClosed(self._worker, key)
        return {}

    # The end of the channel

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        closedHere = bool(getattr(self.transport, "disconnecting", False))
        unexpected = self._worker.isServing() and not self._worker.exitedAfterDisconnect
        if unexpected and (self.violation is not None or not closedHere):
            self._killUnlessGone()
        self._worker.controlLost()
        super().connectionLost(reason)

    def _killUnlessGone(self) -> None:
        """
        The worker lost its channel without being asked to leave: it exits on
        its own within L{CHANNEL_LOST_GRACE} seconds (a worker that crashed
        has, most often, already); if it does not, say so and kill it.
        """
        if self._clock is None:
            return
        self._killIfStill = self._clock.callLater(CHANNEL_LOST_GRACE + 1, self._killLingering)

    def _killLingering(self) -> None:
        self._killIfStill = None
        if not self._worker.isDead():
            self._log.warn(
                "worker {workerId} (pid {pid}) still runs {grace}s after its control channel"
                " closed ({why}); killing it",
                workerId=self._worker.id,
                pid=self._worker.pid,
                grace=CHANNEL_LOST_GRACE,
                why="unasked" if self.violation is None else "it broke the control protocol",
            )
            self._worker.kill("KILL")
