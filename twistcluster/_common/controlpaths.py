# -*- test-case-name: tests.test_controlsocket -*-
"""
Where masters put their control sockets by default, known to both the
master (which binds there) and the C{twistcluster} command (which looks
there): C{RUNDIR/twistcluster/PID.sock}, one socket per master.

Standard library only: the command imports this without Twisted.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping

#: The name of the directory under RUNDIR that holds the masters' sockets.
SOCKET_DIRECTORY = "twistcluster"
#: RUNDIR of root, without C{$XDG_RUNTIME_DIR}.
ROOT_RUNDIR = "/run"


def runtimeDirectory(environ: Mapping[str, str] = os.environ, uid: int | None = None) -> str:
    """
    RUNDIR: C{$XDG_RUNTIME_DIR}, else C{/run} for root, else a directory of
    the user's own under the temporary directory (C{/tmp/twistcluster-UID}).
    """
    uid = os.geteuid() if uid is None else uid
    if environ.get("XDG_RUNTIME_DIR"):
        return environ["XDG_RUNTIME_DIR"]
    if uid == 0:
        return ROOT_RUNDIR
    return perUserDirectory(uid)


def perUserDirectory(uid: int) -> str:
    """
    RUNDIR of a user without C{$XDG_RUNTIME_DIR}: C{TMPDIR/twistcluster-UID}.
    """
    return os.path.join(tempfile.gettempdir(), f"twistcluster-{uid}")


def socketDirectory(environ: Mapping[str, str] = os.environ, uid: int | None = None) -> str:
    """
    Where masters put their default control sockets: C{RUNDIR/twistcluster}.
    """
    return os.path.join(runtimeDirectory(environ, uid), SOCKET_DIRECTORY)


def defaultControlPath(pid: int | None = None, environ: Mapping[str, str] = os.environ) -> str:
    """
    C{RUNDIR/twistcluster/PID.sock}, for this process by default.
    """
    return os.path.join(socketDirectory(environ), f"{os.getpid() if pid is None else pid}.sock")


def searchedDirectories(environ: Mapping[str, str] = os.environ, uid: int | None = None) -> list[str]:
    """
    Every directory a master this user may control could have put its
    default socket in: this user's own RUNDIR first, then root's C{/run}
    (a master started as root that dropped privileges), then the per-user
    temporary one.
    """
    uid = os.geteuid() if uid is None else uid
    candidates = [
        socketDirectory(environ, uid),
        os.path.join(ROOT_RUNDIR, SOCKET_DIRECTORY),
        os.path.join(perUserDirectory(uid), SOCKET_DIRECTORY),
    ]
    return list(dict.fromkeys(candidates))
