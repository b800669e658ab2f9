# -*- test-case-name: tests.test_handoffchannel, tests.test_workercontrol -*-
"""
A control channel that parses AMP boxes in one pass over each read
(L{OnePassChannel}), for the short paths of the hand-off on both ends
(C{NewConn} and its ack): AMP's parser calls a method per key and per value
and makes an L{amp.AmpBox} per box.  Each whole box goes to
L{OnePassChannel.rawBoxReceived}, as a plain dict; by default it takes AMP's
own way (C{ampBoxReceived}), so a box no short path takes is handled exactly
as AMP would.  The bytes on the wire are AMP's.
"""

from __future__ import annotations

from twisted.protocols.amp import AmpBox

from .protocol import ControlChannel

#: The longest key AMP takes.
MAX_KEY = 255
#: A C{True} and a C{False} in an AMP C{ListOf(Boolean())}.
LISTED_TRUE = b"\x00\x04True"
LISTED_FALSE = b"\x00\x05False"


class OnePassChannel(ControlChannel):
    """
    A control channel that parses the boxes it reads in one pass.
    """

    _unparsed = b""

    def unparsed(self) -> bytes:
        """
        What this channel has received and not parsed yet (the start of a
        box), as it came: fed to a channel that takes over the same stream
        (an upgrade of the master), it gives that one the same boxes.
        """
        return self._unparsed

    def dataReceived(self, data: bytes) -> None:
        if self.innerProtocol is not None:
            # Never here (no protocol switch on a control channel), but AMP's.
            super().dataReceived(data)
            return
        buffer = self._unparsed + data if self._unparsed else data
        end = len(buffer)
        at = 0
        while self.transport is not None:
            box: dict[bytes, bytes] = {}
            start = at
            while True:
                if at + 2 > end:
                    self._unparsed = buffer[start:]
                    return
                size = (buffer[at] << 8) | buffer[at + 1]
                if size == 0:
                    at += 2
                    break
                if size > MAX_KEY:
                    # As AMP's parser: the connection ends.
                    self._unparsed = b""
                    self.lengthLimitExceeded(size)
                    return
                keyEnd = at + 2 + size
                if keyEnd + 2 > end:
                    self._unparsed = buffer[start:]
                    return
                valueEnd = keyEnd + 2 + ((buffer[keyEnd] << 8) | buffer[keyEnd + 1])
                if valueEnd > end:
                    self._unparsed = buffer[start:]
                    return
                box[buffer[at + 2 : keyEnd]] = buffer[keyEnd + 2 : valueEnd]
                at = valueEnd
            self.wholeBoxReceived()
            self.rawBoxReceived(box)
        self._unparsed = b""

    def wholeBoxReceived(self) -> None:
        """
        A whole box arrived (each one, whichever way it then takes).
        """

    def rawBoxReceived(self, box: dict[bytes, bytes]) -> None:
        """
        A whole box arrived: AMP's way, unless a short path takes it.
        """
        self.ampBoxReceived(AmpBox(box))
