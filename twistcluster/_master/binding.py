# -*- test-case-name: tests.test_bad_input, tests.test_controlsocket -*-
"""
The master's start: every configured endpoint is bound before any worker
exists, so a bad address fails the start (C{twist} exits non-zero, with one
line saying why) instead of a worker's boot.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

from twisted.internet.error import CannotListenError

from .._common.endpoints import ListenSpec
from .handles import Handle, Handles


class StartupError(Exception):
    """
    The master cannot start; the message says why, in one line.
    """


def bindListens(
    handles: Handles,
    listens: Sequence[tuple[str, ListenSpec]],
    bound: Callable[[str, ListenSpec, Handle], object],
) -> list[Handle]:
    """
    Bind each of C{listens} (the user's words, and the spec), calling
    C{bound} with each as it is bound.

    @return: The handle of each.
    @raise StartupError: One could not be bound (those bound before it are
        closed).
    """
    handled: list[Handle] = []
    # As in a worker (Node's index): the n-th listen on one address gets
    # index n, so two `--listen tcp:0` are two sockets on two ports.
    indexes: Counter[str] = Counter()
    for description, spec in listens:
        index = indexes[spec.key(0)]
        indexes[spec.key(0)] += 1
        try:
            handle = handles.listen(spec, index)
        except CannotListenError as e:
            for earlier in handled:
                earlier.closeNow()
            reason = e.socketError
            text = getattr(reason, "strerror", None) or str(reason)
            raise StartupError(f"cannot listen on {description!r}: {text}") from e
        handled.append(handle)
        bound(description, spec, handle)
    return handled
