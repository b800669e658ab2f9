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


class MessageAssembler:
    """
    Puts each message back together from its chunks.
    """

    def __init__(self) -> None:
        self._id: int | None = None
        self._chunks: list[bytes] = []

    def chunkReceived(self, id: int, chunk: bytes, more: bool) -> tuple[bool, Any]:
        """
        @return: C{(True, value)} when C{chunk} completes a message, else
            C{(False, None)}.

        @raise BadMessage: A chunk of another message came before this one
            was complete, or the whole is not JSON.
        """
        if self._id is not None and id != self._id:
            self._id, self._chunks = None, []
            raise BadMessage(f"chunk of message {id} inside another message")
        self._id = id
        self._chunks.append(chunk)
        if more:
            return False, None
        data = b"".join(self._chunks)
        self._id, self._chunks = None, []
        try:
            return True, json.loads(data)
        except ValueError as e:
            raise BadMessage(f"message {id} is not JSON: {e}") from e
