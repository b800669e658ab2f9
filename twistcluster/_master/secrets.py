# -*- test-case-name: tests.test_privileges -*-
"""
TLS files for workers that may not read them.

Under C{--user}, a key readable only by root still works: the master reads
each file an endpoint names (C{privateKey=}, C{certKey=}, C{extraCertChain=},
C{dhParameters=}) while still root, keeps its bytes in a sealed memfd, and
every worker inherits a descriptor of it, next to its control channel; the
endpoint description the worker gets names C{/dev/fd/N} instead of the
file.  Workers never need the file, and its bytes never touch a disk.
"""

from __future__ import annotations

import fcntl
import os

#: The endpoint arguments that name a file the worker reads when it parses
#: the description (Twisted's C{ssl:} parser).
TLS_FILE_ARGUMENTS = frozenset({"privateKey", "certKey", "extraCertChain", "dhParameters"})
#: The first descriptor number the kept files take in a worker (0-2 are its
#: standard streams, 3 its control channel).
FIRST_FD = 4

_SEALS = fcntl.F_SEAL_WRITE | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_SEAL


def _segments(description: str) -> list[str]:
    """
    An endpoint description split at its unescaped colons, escapes kept.
    """
    segments, current, escaped = [], "", False
    for char in description:
        if escaped:
            current += char
            escaped = False
        elif char == "\\":
            current += char
            escaped = True
        elif char == ":":
            segments.append(current)
            current = ""
        else:
            current += char
    segments.append(current)
    return segments


def _unescape(segment: str) -> str:
    out, escaped = "", False
    for char in segment:
        if escaped or char != "\\":
            out += char
            escaped = False
        else:
            escaped = True
    return out


class KeptFiles:
    """
    Files the master read while root, for its workers.

    @ivar childFDs: The descriptor each worker gets (its number in the
        worker) for each kept file (the master's descriptor).
    """

    def __init__(self) -> None:
        self.childFDs: dict[int, int] = {}
        self._byPath: dict[str, int] = {}

    def keep(self, path: str) -> int:
        """
        Read C{path} into a sealed memfd (once per file).

        @return: The descriptor number the workers will have it under.
        @raise OSError: It cannot be read.
        """
        path = os.path.abspath(path)
        if path in self._byPath:
            return self._byPath[path]
        with open(path, "rb") as f:
            content = f.read()
        fd = os.memfd_create(f"twistcluster:{os.path.basename(path)}", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        os.write(fd, content)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
        childFD = FIRST_FD + len(self.childFDs)
        self.childFDs[childFD] = fd
        self._byPath[path] = childFD
        return childFD

    def rewrite(self, argument: str) -> str:
        """
        C{argument} (an endpoint description, or any other argument) with
        every TLS file it names replaced by the worker's descriptor of it.
        """
        segments = _segments(argument)
        if len(segments) < 2:
            return argument
        for index, segment in enumerate(segments):
            key, equals, value = _unescape(segment).partition("=")
            if equals and key in TLS_FILE_ARGUMENTS and value:
                try:
                    childFD = self.keep(value)
                except OSError:
                    continue  # The master's own parse already said what is wrong.
                segments[index] = f"{key}=/dev/fd/{childFD}"
        return ":".join(segments)

    def close(self) -> None:
        for fd in self.childFDs.values():
            os.close(fd)
        self.childFDs.clear()
        self._byPath.clear()
