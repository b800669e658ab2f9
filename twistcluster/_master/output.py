# -*- test-case-name: tests.test_output -*-
"""
A worker's output, in the master's log: its stdout and stderr are pipes to
the master, which logs each line with the worker's id; the worker's own log
events arrive as JSON on its stderr and are published again as they were
(namespace, level, format, failure), with the worker's id added.

A line costs the master time in proportion to its length, however it
arrives: a read is only searched for its own newlines, and a line longer
than L{MAX_LINE} is logged in pieces of that size, each saying so (an
unbounded line that is joined again on every read cost the master 18.7 s
of CPU for 20 MiB).
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger, LogLevel, eventFromJSON, formatEvent
from twisted.python.failure import Failure

from .._common.jsonlog import fromFields
from .faults import FaultReport
from .worker import Worker

#: The longest line relayed whole (and the size of a longer one's pieces).
MAX_LINE = 1024 * 1024


class LineSplitter:
    """
    A byte stream cut into lines of at most C{limit} bytes, at a cost linear
    in the stream's length.
    """

    def __init__(self, limit: int = MAX_LINE) -> None:
        self._limit = limit
        self._pieces: list[bytes] = []
        self._size = 0
        #: How many pieces of the line being read were already given out.
        self._parts = 0

    def feed(self, data: bytes) -> list[tuple[bytes, int, bool]]:
        """
        @return: Each line or piece that C{data} completes: its bytes, its
            part number (0 for a whole line, 1, 2, ... for the pieces of a
            longer one) and whether it ends its line.
        """
        found: list[tuple[bytes, int, bool]] = []
        start = 0
        while True:
            end = data.find(b"\n", start)
            if end < 0:
                break
            self._add(data[start:end], found)
            found.append(self._take(ended=True))
            start = end + 1
        self._add(data[start:], found)
        return found

    def flush(self) -> list[tuple[bytes, int, bool]]:
        """
        @return: What is left of an unfinished line (the stream ended).
        """
        return [self._take(ended=True)] if self._size or self._parts else []

    def pending(self) -> tuple[bytes, int]:
        """
        The unfinished line read so far, and how many pieces of it were given
        out already (carried across an upgrade; L{restore} takes it back).
        """
        return b"".join(self._pieces), self._parts

    def restore(self, data: bytes, parts: int) -> None:
        self._pieces, self._size, self._parts = ([data] if data else []), len(data), parts

    def _add(self, data: bytes, found: list[tuple[bytes, int, bool]]) -> None:
        if not data:
            return
        self._pieces.append(data)
        self._size += len(data)
        while self._size > self._limit:
            joined = b"".join(self._pieces)
            self._pieces, self._size = [joined[self._limit :]], len(joined) - self._limit
            self._parts += 1
            found.append((joined[: self._limit], self._parts, False))

    def _take(self, ended: bool) -> tuple[bytes, int, bool]:
        line = b"".join(self._pieces)
        part = self._parts + 1 if self._parts else 0
        self._pieces, self._size, self._parts = [], 0, 0
        return line, part, ended


class WorkerProcessProtocol(ProcessProtocol):
    """
    Relays a worker's stdout and stderr to the master's log, line by line,
    with the worker's id; its log events (JSON on stderr) keep their
    namespace, level and failure.
    """

    _log = Logger()

    def __init__(self, worker: Worker) -> None:
        self._worker = worker
        self._lines = {1: LineSplitter(), 2: LineSplitter()}
        self._fault = FaultReport()

    @property
    def lines(self) -> dict[int, LineSplitter]:
        """
        The line splitter of the worker's stdout (1) and stderr (2).
        """
        return self._lines

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        lines = self._lines.get(childFD)
        if lines is None:
            return
        for line, part, ended in lines.feed(data):
            self._relayPart(childFD, line, part, ended)

    def processEnded(self, reason: Failure) -> None:
        for childFD, lines in self._lines.items():
            for line, part, ended in lines.flush():
                self._relayPart(childFD, line, part, ended)
        self._faultEnded()
        self._worker.processEnded(reason)

    def _relayPart(self, childFD: int, line: bytes, part: int, ended: bool) -> None:
        if part == 0:
            self._relay(childFD, line)
            return
        self._log.emit(
            LogLevel.info if childFD == 1 else LogLevel.warn,
            "[worker {workerId}] [long line, part {part}{end}] {text}",
            workerId=self._worker.id,
            part=part,
            end=", end" if ended else "",
            text=line.decode("utf-8", "replace"),
        )

    def _relay(self, childFD: int, line: bytes) -> None:
        if line.startswith(b"\x1e"):
            try:
                event = eventFromJSON(line[1:].decode("utf-8", "replace"))
            except (ValueError, json.JSONDecodeError):
                pass
            else:
                self._faultEnded()
                self._relayEvent(event)
                return
        text = line.decode("utf-8", "replace").rstrip("\r")
        if childFD == 2:
            inReport = self._fault.feed(text)
            if self._fault.complete:
                self._faultEnded()
            if not inReport and text.strip():
                self._worker.lastError = text.strip()
        if text:
            self._log.emit(
                LogLevel.info if childFD == 1 else LogLevel.warn,
                "[worker {workerId}] {text}",
                workerId=self._worker.id,
                text=text,
            )

    def _faultEnded(self) -> None:
        """
        A fault report (faulthandler's) ended: the culprit is where the
        worker's main thread was.
        """
        culprit = self._fault.finish(self._worker.lastError)
        if culprit is not None:
            self._worker.lastError = culprit

    def _relayEvent(self, event: dict[str, Any]) -> None:
        event = fromFields(event)
        level = event.get("log_level")
        if not isinstance(level, type(LogLevel.info)):
            event["log_level"] = level = LogLevel.info
        if level in (LogLevel.error, LogLevel.critical):
            self._worker.lastError = describeEvent(event)
        self._log.observer(asMasterEvent(event, self._worker.id))


def describeEvent(event: dict[str, Any]) -> str:
    """
    An event in one line: its text, and its failure's type and message
    (unless the text says them already).
    """
    text = formatEvent(event).strip()
    failure = event.get("log_failure")
    if isinstance(failure, Failure):
        error = f"{getattr(failure.type, '__name__', failure.type)}: {failure.getErrorMessage()}"
        if error not in text:
            text = f"{text}: {error}" if text else error
    return text


def asMasterEvent(event: dict[str, Any], workerId: int) -> dict[str, Any]:
    """
    A worker's log event as the master publishes it: its namespace, level,
    time, format and failure as they were, its text prefixed with the
    worker's id (literally, so the format's own fields keep their values),
    and the id in C{workerId} unless the event has its own.
    """
    event = fromFields(event)
    for unreadable in ("log_logger", "log_source"):
        # Objects of the worker's, which only survive as a marker.
        if isinstance(event.get(unreadable), dict):
            del event[unreadable]
    prefix = f"[worker {workerId}]"
    form = event.get("log_format")
    event["log_format"] = f"{prefix} {form}" if form else prefix
    event.setdefault("workerId", workerId)
    event.setdefault("log_namespace", "twistcluster.worker")
    return event
