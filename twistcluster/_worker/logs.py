# -*- test-case-name: tests.test_output -*-
"""
A worker's log: its events go to the master as JSON lines on stderr (the
master publishes them again with the worker's id).

Twisted's JSON form of a failure keeps its type's name and its frames but
not the exception itself, which JSON cannot hold: the master would log
C{builtins.RuntimeError: {'unpersistable': True}}.  The worker sends the
exception's message in its place, so the master's log shows the type,
message and traceback as a single C{twist} process logs them.
"""

from __future__ import annotations

import json
from typing import IO, Any

from twisted.logger import FileLogObserver, eventAsJSON
from twisted.python.failure import Failure
from twisted.python.reflect import safe_str


def portableFailure(failure: Failure) -> dict[str, Any]:
    """
    C{failure} in Twisted's JSON form (which C{eventFromJSON} loads as a
    L{Failure}), its exception replaced by the exception's message.
    """
    encoded = json.loads(eventAsJSON({"failure": failure}))["failure"]
    encoded["value"] = safe_str(failure.value)
    return encoded  # type: ignore[no-any-return]


def eventForMaster(event: dict[str, Any]) -> str:
    """
    One event as a JSON text sequence record (RS, JSON, NL), its failure
    with its message.
    """
    failure = event.get("log_failure")
    if isinstance(failure, Failure):
        event = dict(event, log_failure=portableFailure(failure))
    return f"\x1e{eventAsJSON(event)}\n"


def masterLogObserver(stream: IO[Any]) -> FileLogObserver:
    """
    What the worker logs to: the master reads C{stream} (its stderr).
    """
    return FileLogObserver(stream, eventForMaster)
