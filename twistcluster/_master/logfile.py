# -*- test-case-name: tests.test_signals -*-
"""
Reopening the master's log file on USR1, for logrotate.

C{twist --log-file PATH} opens the file itself and logs to that Python file
object; nothing in C{twist} reopens it.  Reopening keeps that object and its
descriptor number: what was buffered is flushed to the old file, then a new
file at the same path is put on the same descriptor (C{dup2}), so every
line goes to one file or the other and none is lost.
"""

from __future__ import annotations

import os
import sys
from typing import IO, Any


class ReopenableLogFile:
    """
    The file C{twist --log-file} opened, reopened at its path on demand.

    @ivar path: Its absolute path.
    """

    def __init__(self, file: IO[Any], path: str) -> None:
        self._file = file
        self.path = path

    @classmethod
    def fromTwistOptions(cls, options: Any) -> ReopenableLogFile | None:
        """
        The log file of the C{twist} command these subcommand C{options}
        belong to, if it logs to a file (not standard output or error).
        """
        parent = getattr(options, "parent", None)
        file = parent.get("logFile") if parent is not None else None
        if file is None or file in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
            return None
        name = getattr(file, "name", None)
        if not isinstance(name, str) or not hasattr(file, "fileno"):
            return None
        return cls(file, os.path.abspath(name))

    def reopen(self) -> None:
        """
        Flush to the old file, then carry on in a new one at the same path
        (created if it was moved away) on the same descriptor.

        @raise OSError: The path cannot be opened; the old file stays.
        """
        self._file.flush()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            os.dup2(fd, self._file.fileno(), inheritable=False)
        finally:
            os.close(fd)
