# -*- test-case-name: tests.test_cluster -*-
"""
A worker's output, in the master's log: its stdout and stderr are pipes to
the master, which logs each line with the worker's id; the worker's own log
events arrive as JSON on its stderr and keep their level.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger, LogLevel, eventFromJSON, formatEvent
from twisted.python.failure import Failure

from .worker import Worker


class WorkerProcessProtocol(ProcessProtocol):
    """
    Relays a worker's stdout and stderr to the master's log, line by line,
    with the worker's id; its log events (JSON on stderr) keep their level.
    """

    _log = Logger()

    def __init__(self, worker: Worker) -> None:
        self._worker = worker
        self._partial = {1: b"", 2: b""}

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        *lines, self._partial[childFD] = (self._partial.get(childFD, b"") + data).split(b"\n")
        for line in lines:
            self._relay(childFD, line)

    def processEnded(self, reason: Failure) -> None:
        for childFD, rest in self._partial.items():
            if rest:
                self._relay(childFD, rest)
        self._partial = {1: b"", 2: b""}
        self._worker.processEnded(reason)

    def _relay(self, childFD: int, line: bytes) -> None:
        if line.startswith(b"\x1e"):
            try:
                event = eventFromJSON(line[1:].decode("utf-8", "replace"))
            except (ValueError, json.JSONDecodeError):
                pass
            else:
                self._relayEvent(event)
                return
        text = line.decode("utf-8", "replace").rstrip("\r")
        if text and childFD == 2:
            self._worker.lastError = text.strip()
        if text:
            self._log.emit(
                LogLevel.info if childFD == 1 else LogLevel.warn,
                "[worker {workerId}] {text}",
                workerId=self._worker.id,
                text=text,
            )

    def _relayEvent(self, event: dict[str, Any]) -> None:
        level = event.get("log_level")
        if not isinstance(level, type(LogLevel.info)):
            level = LogLevel.info
        text = formatEvent(event)
        if level in (LogLevel.error, LogLevel.critical):
            self._worker.lastError = text
        extra: dict[str, Any] = {}
        if "log_failure" in event:
            extra["log_failure"] = event["log_failure"]
        self._log.emit(
            level,
            "[worker {workerId}] {text}",
            workerId=self._worker.id,
            text=text,
            workerNamespace=event.get("log_namespace"),
            **extra,
        )
