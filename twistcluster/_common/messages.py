# -*- test-case-name: tests.test_messages -*-
"""
User messages on the control channel: JSON of any size, cut into chunks that
fit AMP's 64 KiB value limit and put together again on the other side.

AMP keeps the order of boxes on one connection and a message's chunks are
written together, so chunks of two messages never interleave; the id is a
check, not a sort key.
"""

from __future__ import annotations

import json
from typing import Any

#: Bytes of JSON per chunk: under AMP's MAX_VALUE_LENGTH (65535).
CHUNK_SIZE = 60 * 1024


class BadMessage(ValueError):
    """
    Chunks that do not make a message (out of order, or not JSON).
    """


def encodeMessage(value: Any) -> list[bytes]:
    """
    @return: C{value} as JSON, in chunks of at most L{CHUNK_SIZE} bytes (at
        least one chunk).

    @raise TypeError: C{value} is not JSON-serialisable.
    @raise ValueError: C{value} has a circular reference or a non-finite float.
    """
    data = json.dumps(value, separators=(",", ":"), allow_nan=False).encode("utf-8")
    return [data[i : i + CHUNK_SIZE] for i in range(0, len(data), CHUNK_SIZE)] or [b""]


class MessageTooLarge(ValueError):
    """
    A message longer than the receiver takes: its chunks are dropped as they
    arrive, and every one of them is answered with this error.
    """


class MessageAssembler:
    """
    Puts each message back together from its chunks, holding at most
    C{maxSize} bytes of one.

    Each kind of chunked payload has an assembler of its own, with its own
    bound: user messages (L{twistcluster._common.protocol.Message}) get the
    channel's C{maxMessageSize}; a reply the master asks a worker for (a
    metrics scrape, say) is put together by an assembler with the bound that
    reply needs, so that a worker cannot use one to send the other.

    @ivar maxSize: The longest message taken, in bytes of JSON (L{None}: no
        bound, for a side that trusts its peer).
    """

    def __init__(self, maxSize: int | None = None) -> None:
        self.maxSize = maxSize
        self._id: int | None = None
        self._chunks: list[bytes] = []
        self._size = 0
        #: The message whose chunks are being dropped (too large).
        self._dropping: int | None = None

    @property
    def assembling(self) -> bool:
        """
        Whether some chunks of a message arrived and its last has not.
        """
        return self._id is not None or self._dropping is not None

    def chunkReceived(self, id: int, chunk: bytes, more: bool) -> tuple[bool, Any]:
        """
        @return: C{(True, value)} when C{chunk} completes a message, else
            C{(False, None)}.

        @raise BadMessage: A chunk of another message came before this one
            was complete, or the whole is not JSON.
        @raise MessageTooLarge: The message this chunk belongs to is longer
            than L{maxSize}; it is dropped (and so are its later chunks).
        """
        if self._dropping is not None:
            if id == self._dropping:
                if not more:
                    self._dropping = None
                raise MessageTooLarge(f"message {id} is longer than {self.maxSize} bytes")
            self._dropping = None
        if self._id is not None and id != self._id:
            self._reset()
            raise BadMessage(f"chunk of message {id} inside another message")
        self._size += len(chunk)
        if self.maxSize is not None and self._size > self.maxSize:
            self._reset()
            if more:
                self._dropping = id
            raise MessageTooLarge(f"message {id} is longer than {self.maxSize} bytes")
        self._id = id
        self._chunks.append(chunk)
        if more:
            return False, None
        data = b"".join(self._chunks)
        self._reset()
        try:
            return True, json.loads(data)
        except ValueError as e:
            raise BadMessage(f"message {id} is not JSON: {e}") from e

    def _reset(self) -> None:
        self._id, self._chunks, self._size = None, [], 0
