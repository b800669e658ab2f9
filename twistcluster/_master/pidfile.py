# -*- test-case-name: tests.test_pidfile -*-
"""
C{--pidfile PATH}: the master's pid, for init scripts and monitors.

Checked before anything is bound (a live master there is an error; a stale
file, left by a master that died, is replaced), written once the master is
serving (still as root, owned by the target user, so the master can remove
it after dropping privileges), and removed when the master exits, where the
directory lets it.
"""

from __future__ import annotations

import errno
import os

from twisted.logger import Logger


class PIDFileBusy(Exception):
    """
    Another live process owns the pid file; the message says which.
    """


class PIDFile:
    """
    A pid file at C{path}, for this process (C{pid}).
    """

    _log = Logger()

    def __init__(self, path: str, pid: int | None = None) -> None:
        self.path = os.path.abspath(path)
        self.pid = os.getpid() if pid is None else pid
        self.written = False

    def _recorded(self) -> int | None:
        try:
            with open(self.path) as f:
                return int(f.read().strip())
        except FileNotFoundError:
            return None
        except ValueError:
            return 0

    def check(self) -> None:
        """
        Make sure no other live process claims the file; remove a stale one.

        @raise PIDFileBusy: One does.
        @raise OSError: The file cannot be read or removed.
        """
        recorded = self._recorded()
        if recorded is None or recorded == self.pid:
            return
        if recorded > 0 and _alive(recorded):
            raise PIDFileBusy(f"--pidfile {self.path}: pid {recorded} is running (another master?)")
        os.unlink(self.path)
        self._log.info("removed the stale pid file {path} (pid {pid})", path=self.path, pid=recorded)

    def write(self, owner: tuple[int, int] | None = None) -> None:
        """
        Write this pid, atomically (a new file renamed over the path), owned
        by C{owner} (uid, gid) if given.
        """
        temporary = f"{self.path}.{self.pid}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, f"{self.pid}\n".encode())
            if owner is not None:
                os.fchown(fd, *owner)
        finally:
            os.close(fd)
        os.rename(temporary, self.path)
        self.written = True

    def remove(self) -> None:
        """
        Remove the file if it is still this process's; say so if the
        directory does not allow it.
        """
        if not self.written or self._recorded() != self.pid:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        except OSError as e:
            self._log.warn("cannot remove the pid file {path}: {error}", path=self.path, error=e.strerror)
        self.written = False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError as e:
        return e.errno == errno.EPERM
    return True
