# -*- test-case-name: tests.test_descriptors -*-
"""
Descriptors on the control channel: how a box names the sockets that travel
with it, and how the receiving side keeps that naming in step even when the
kernel drops some of them.

Each box that carries descriptors (a C{NewConn}, a C{QueryServer} answer)
names them by ordinal: the n-th descriptor sent on the channel is ordinal n.
The sender (L{SendingChannelTransport}) sends one box's descriptors in one
C{SCM_RIGHTS} message of their own, riding on one byte at or before the
box's first byte, so messages and the boxes that name them come in the same
order, one to one, each message ahead of its box.

A receiver out of descriptors (C{EMFILE}) gets only the first few of a
message, or none, and the kernel says so with C{MSG_CTRUNC}, which
Twisted's UNIX transport ignores: numbered by arrival, every later
descriptor would then go to the wrong box.  L{ReceivingChannelTransport}
reports truncation, and L{DescriptorInbox} stops numbering at the gap until
the box that names the truncated message arrives: its last ordinal ends the
gap, the descriptors it names beyond what arrived are lost (that box's
sockets are refused), and numbering resumes, in step, with the messages
held meanwhile.  A box that names more than one message's worth
(L{MAX_PER_BOX}) is refused at the sender.
"""

from __future__ import annotations

import array
import os
import resource
import socket
import struct
from collections import deque
from collections.abc import Callable
from errno import EAGAIN, ENOBUFS, EWOULDBLOCK
from typing import Any, Protocol, cast

from twisted.internet import error, main
from twisted.internet.interfaces import IProtocolFactory, IReactorFDSet
from twisted.python import sendmsg
from twisted.python.compat import lazyByteSlice
from twisted.python.util import untilConcludes

from .twistedinternals import (
    UNIXServer,
    adoptUNIXConnection,
    deliverReceivedData,
    queuedDescriptors,
    sendsNothing,
    writeWithoutDescriptors,
)

#: The most descriptors Linux takes in one SCM_RIGHTS message (SCM_MAX_FD),
#: and so the most one box may carry.
MAX_PER_BOX = 253

#: Room for the ancillary data of one recvmsg (as Twisted's transport).
_ANCILLARY_SPACE = socket.CMSG_SPACE(4096)
#: Received descriptors are close-on-exec, as every other descriptor here.
_RECEIVE_FLAGS = getattr(socket, "MSG_CMSG_CLOEXEC", 0)


class DescriptorReceiver(Protocol):
    """
    What L{ReceivingChannelTransport} tells its protocol, once per message
    that carried descriptors, before the bytes that came with them.
    """

    def descriptorsReceived(self, fds: list[int], truncated: bool) -> None:
        """
        C{fds} arrived in one message; C{truncated}: the kernel dropped the
        rest of it (the receiver was out of descriptors).
        """


class DescriptorInbox:
    """
    The descriptors received on one channel, by the ordinal that names each.

    @ivar lost: How many descriptors the kernel dropped so far.
    """

    def __init__(self, close: Callable[[int], object] = os.close) -> None:
        self._close = close
        self._byOrdinal: dict[int, int] = {}
        self._next = 0
        #: The first ordinal lost in a truncated message, until the box that
        #: names it says where the message ended.
        self._gapFrom: int | None = None
        #: Messages received after a truncated one, not numbered yet.
        self._held: deque[tuple[list[int], bool]] = deque()
        self.lost = 0

    def received(self, fds: list[int], truncated: bool) -> None:
        """
        One message's descriptors arrived (in the order they were sent).
        """
        if self._gapFrom is not None:
            self._held.append((fds, truncated))
        else:
            self._number(fds, truncated)

    def _number(self, fds: list[int], truncated: bool) -> None:
        ordinal = self._next
        for fd in fds:
            self._byOrdinal[ordinal] = fd
            ordinal += 1
        self._next = ordinal
        if truncated:
            self._gapFrom = ordinal

    def take(self, ordinals: list[int]) -> list[int | None]:
        """
        The descriptors one box names, now the caller's: L{None} for each one
        that never arrived.
        """
        gapFrom = self._gapFrom
        if gapFrom is not None and ordinals:
            last = max(ordinals)
            if last >= gapFrom:
                # This box's message was the truncated one: it ended at last.
                self.lost += last + 1 - gapFrom
                self._next, self._gapFrom = last + 1, None
                while self._held and self._gapFrom is None:
                    self._number(*self._held.popleft())
        pop = self._byOrdinal.pop
        return [pop(ordinal, None) for ordinal in ordinals]

    def closeAll(self) -> None:
        """
        Close every descriptor no box claimed (the channel is gone).
        """
        fds = list(self._byOrdinal.values())
        for held, _ in self._held:
            fds.extend(held)
        self._byOrdinal.clear()
        self._held.clear()
        for fd in fds:
            self._close(fd)


class _ChannelReads:
    """
    Mixed into a channel's transport (before Twisted's): one C{recvmsg} per
    read, and each message's descriptors reported together, with whether
    the kernel truncated them (C{MSG_CTRUNC}), received close-on-exec, to
    its protocol (a L{DescriptorReceiver}).  Twisted's transport ignores
    truncation and reports descriptors one at a time.
    """

    socket: socket.socket
    bufferSize: int
    protocol: Any

    def doRead(self) -> Any:
        try:
            data, ancillary, flags, _ = untilConcludes(
                self.socket.recvmsg, self.bufferSize, _ANCILLARY_SPACE, _RECEIVE_FLAGS
            )
        except OSError as e:
            return None if e.errno == EWOULDBLOCK else main.CONNECTION_LOST
        truncated = bool(flags & socket.MSG_CTRUNC)
        if ancillary or truncated:
            fds = array.array("i")
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
            cast(DescriptorReceiver, self.protocol).descriptorsReceived(fds.tolist(), truncated)
        # Mixed into a UNIXServer (no cast: a call per read).
        return deliverReceivedData(self, data)  # type: ignore[arg-type]


class ReceivingChannelTransport(_ChannelReads, UNIXServer):
    """
    A worker's end of its control channel: Twisted's UNIX transport, except
    that it tells its protocol (a L{DescriptorReceiver}) when the kernel
    truncated a message's descriptors (C{MSG_CTRUNC}), and receives them
    close-on-exec; and L{writeAtOnce}.
    """

    def writeAtOnce(self, data: bytes) -> None:
        """
        Write C{data}: at once when nothing waits to be sent (no writability
        watch, no turn of the reactor; the worker's acks), else queued as
        C{write} queues it.
        """
        if self.connected and not self.disconnecting and sendsNothing(self):
            try:
                sent = self.socket.send(data)
            except OSError:
                # A full socket: queued; any other error the queue meets
                # again, and ends the channel, where Twisted meets it.
                sent = 0
            if sent == len(data):
                return
            data = data[sent:]
        self.write(data)


class SendingChannelTransport(_ChannelReads, UNIXServer):
    """
    The master's end of a control channel: each box's descriptors go in one
    C{SCM_RIGHTS} message of their own, riding on one byte.

    Twisted's transport sends each descriptor in a sendmsg of its own, and
    the kernel never merges messages that carry descriptors, so the receiver
    needs one recvmsg (one turn of its reactor) per descriptor.  Here a
    batch of sockets handed off together costs one sendmsg and one recvmsg.
    A box is one C{write()} (AMP's C{sendBox}): the descriptors queued
    before it are its group.  It reads as a worker's end does (a worker
    sends the master no descriptors; each one it does is closed).  L{writeBox} sends a box and its descriptors
    at once when nothing waits (the master's hand-off).
    """

    _ungrouped = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: How many of the queued descriptors each box carries, in order.
        self._groups: deque[int] = deque()

    def sendFileDescriptor(self, fileno: int) -> None:
        self._ungrouped += 1
        super().sendFileDescriptor(fileno)

    def write(self, data: bytes) -> None:
        if self._ungrouped:
            self._groups.append(self._ungrouped)
            self._ungrouped = 0
        super().write(data)

    def writeBox(self, data: bytes, fds: list[int]) -> None:
        """
        Write one box and the descriptors it names (at most L{MAX_PER_BOX}).

        When nothing waits to be sent, the box goes at once, in one
        C{sendmsg} with its descriptors: no turn of the reactor, no
        writability watch, no second system call for the rest of the box.
        What the kernel does not take, and a box written while others wait,
        is queued as C{sendFileDescriptor} and C{write} queue it (an error
        other than a full socket is then met, and ends the channel, where
        Twisted meets it).
        """
        if self.connected and not self.disconnecting and not self._ungrouped and sendsNothing(self):
            try:
                if fds:
                    sent = self.socket.sendmsg(
                        [data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))]
                    )
                else:
                    sent = self.socket.send(data)
            except OSError:
                sent = 0
            if sent == len(data):
                return
            if sent:
                # The descriptors went with the first byte.
                data, fds = data[sent:], []
        for fd in fds:
            self.sendFileDescriptor(fd)
        self.write(data)

    def writeSomeData(self, data: Any) -> Any:
        queued = queuedDescriptors(self)
        if not queued:
            return writeWithoutDescriptors(self, data)
        if not data:
            return error.FileDescriptorOverrun()
        groups = self._groups
        if self._ungrouped:
            # Queued with no box after them: they go on their own.
            groups.append(self._ungrouped)
            self._ungrouped = 0
        sent = 0
        while groups and sent < len(data):
            size = groups[0]
            try:
                untilConcludes(
                    sendmsg.sendmsg,
                    self.socket,
                    data[sent : sent + 1],
                    [(socket.SOL_SOCKET, sendmsg.SCM_RIGHTS, struct.pack(f"{size}i", *queued[:size]))],
                )
            except OSError as e:
                return sent if e.errno in (EAGAIN, ENOBUFS) else main.CONNECTION_LOST
            del queued[:size]
            groups.popleft()
            sent += 1
        if queued:
            return sent
        result = writeWithoutDescriptors(self, lazyByteSlice(data, sent))
        return sent + result if isinstance(result, int) else result


def adoptSendingEnd(reactor: IReactorFDSet, fd: int, factory: IProtocolFactory) -> UNIXServer | None:
    """
    Adopt the master's end of a control channel, as
    C{reactor.adoptStreamConnection(fd, AF_UNIX, factory)} would, with a
    L{SendingChannelTransport}.  C{fd} is duplicated; the caller closes it.
    """
    return adoptUNIXConnection(SendingChannelTransport, reactor, fd, factory)


def adoptReceivingEnd(reactor: IReactorFDSet, fd: int, factory: IProtocolFactory) -> UNIXServer | None:
    """
    Adopt a worker's end of its control channel with a
    L{ReceivingChannelTransport}.  C{fd} is duplicated; the caller closes it.
    """
    return adoptUNIXConnection(ReceivingChannelTransport, reactor, fd, factory)


def raiseOpenFilesLimit() -> tuple[int, int]:
    """
    Raise this process's soft limit of open files to its hard limit (as
    nginx's C{worker_rlimit_nofile} does): every connection a process holds
    is a descriptor, and the usual soft limit (1024) is far below what the
    system allows.

    @return: The soft limit before, and now.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft == hard:
        return soft, soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        return soft, soft
    return soft, hard
