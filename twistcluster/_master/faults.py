# -*- test-case-name: tests.test_output -*-
"""
faulthandler's reports in a worker's stderr, read for the culprit.

A worker runs with C{faulthandler} enabled, so a hung worker the master
aborts (C{SIGABRT}), or one that crashes, writes where each thread was::

    Fatal Python error: Aborted

    Thread 0x00007f... (most recent call first):
      File ".../threading.py", line 331 in wait
      ...

    Current thread 0x00007f... (most recent call first):
      File "/srv/app/slow.py", line 3 in <module>
      ...

    Extension modules: zope.interface._zope_interface_coptimizations, ... (total: 3)

The last line is no culprit; the innermost frame of the main thread is.
Threads are listed newest first, so the main thread (the oldest) comes
last.
"""

from __future__ import annotations

import re

_FATAL = re.compile(r"^Fatal Python error: (.*)$")
_THREAD = re.compile(r"^(?:Current thread|Thread) 0x[0-9a-fA-F]+\b.*:\s*$|^Stack \(most recent call first\):")
_FRAME = re.compile(r'^  File "(.*)", line (\d+) in (.*)$')
_END = "Extension modules:"


class FaultReport:
    """
    One faulthandler report, fed line by line.

    @ivar complete: The report has ended (its last line, or a line that is
        not part of it, was fed).
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._active = False
        self._fatal: str | None = None
        #: The innermost frame of each thread, in the order listed.
        self._innermost: list[tuple[str, str, str] | None] = []
        self.complete = False

    def feed(self, line: str) -> bool:
        """
        @return: Whether C{line} is part of a report.
        """
        fatal = _FATAL.match(line)
        if fatal:
            self._reset()
            self._active = True
            self._fatal = fatal.group(1).strip()
            return True
        if _THREAD.match(line):
            self._active = True
            self._innermost.append(None)
            return True
        if not self._active:
            return False
        frame = _FRAME.match(line)
        if frame:
            if self._innermost and self._innermost[-1] is None:
                self._innermost[-1] = (frame.group(1), frame.group(2), frame.group(3))
            return True
        if line.startswith(_END):
            self.complete = True
            return True
        if not line.strip() or line.startswith("  ") or line.startswith("Garbage-collecting"):
            return True
        self.complete = True
        return False

    def finish(self, lastError: str | None) -> str | None:
        """
        End the report.

        @param lastError: What the worker was last blamed for (the master
            sets it when it aborts a hung worker).
        @return: The culprit, in one line: C{lastError} (or the fatal
            error), and where the main thread was; L{None} if no report was
            read.
        """
        if not self._active:
            return None
        fatal, frames = self._fatal, [f for f in self._innermost if f is not None]
        self._reset()
        if fatal is not None and (fatal != "Aborted" or lastError is None):
            culprit = f"Fatal Python error: {fatal}"
        else:
            culprit = lastError or "faulthandler's report"
        if frames:
            fileName, line, function = frames[-1]
            culprit = f"{culprit}; its main thread was at {fileName}, line {line}, in {function}"
        return culprit
