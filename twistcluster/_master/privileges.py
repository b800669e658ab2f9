# -*- test-case-name: tests.test_privileges -*-
"""
Running as another user (C{--user}, C{--group}, C{--umask}): the master
binds every endpoint and reads every TLS key while still root, then drops
its privileges (the user's supplementary groups, then the group, then the
user, as twistd and gunicorn do), and its workers start as that user.

User code never runs as root: FACTORY (or the subcommand) is loaded for the
check the master makes before starting (L{twistcluster._cli.check}) in a
child process already running as the target user, and the master itself
never loads it.
"""

from __future__ import annotations

import grp
import os
import pwd
from collections.abc import Callable, Iterable

from attrs import frozen
from twisted.application.service import Service
from twisted.internet.interfaces import IReactorCore
from twisted.logger import Logger

from .pidfile import PIDFile


class BadCredentials(Exception):
    """
    The user or group cannot be used; the message says why, in one line.
    """


@frozen
class Credentials:
    """
    Who the master and its workers run as.

    @ivar name: The user's name (its supplementary groups are looked up by it).
    @ivar uid: The user id.
    @ivar gid: The group id (the user's primary group unless C{--group}).
    @ivar groups: The supplementary groups, C{gid} included.
    @ivar home: The user's home directory.
    """

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str = "/"

    @classmethod
    def resolve(cls, user: str, group: str | None = None) -> Credentials:
        """
        The credentials of C{user} (a name or a uid), in C{group} (a name or
        a gid; by default the user's primary group).

        @raise BadCredentials: No such user or group.
        """
        try:
            entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
        except (KeyError, OverflowError):
            raise BadCredentials(f"--user {user}: no such user") from None
        gid = entry.pw_gid
        if group is not None:
            try:
                gid = grp.getgrgid(int(group)).gr_gid if group.isdigit() else grp.getgrnam(group).gr_gid
            except (KeyError, OverflowError):
                raise BadCredentials(f"--group {group}: no such group") from None
        groups = tuple(sorted(set(os.getgrouplist(entry.pw_name, gid))))
        return cls(entry.pw_name, entry.pw_uid, gid, groups, entry.pw_dir)

    @property
    def switches(self) -> bool:
        """
        Whether becoming these credentials changes anything for this process.
        """
        return (self.uid, self.gid) != (os.geteuid(), os.getegid())

    def checkAllowed(self) -> None:
        """
        Only root may switch users; naming the user (and group) already
        running is allowed (and changes nothing).

        @raise BadCredentials: Not root, and asked to become someone else.
        """
        if self.switches and os.geteuid() != 0:
            raise BadCredentials(
                f"--user {self.name}: only root can run as another user "
                f"(this runs as uid {os.geteuid()}, gid {os.getegid()})"
            )

    def chown(self, path: str) -> None:
        """
        Give C{path} (a UNIX socket file, a pid file) to these credentials.
        """
        if self.switches:
            os.chown(path, self.uid, self.gid)

    def drop(self) -> None:
        """
        Become these credentials, for good: supplementary groups, group,
        then user (real, effective and saved ids alike).

        @raise BadCredentials: The kernel refused, or root could be regained.
        """
        # What the workers (and user code) read of who they are; set by a
        # master that already runs as them too (one upgraded after its drop
        # started from the environment root started with).
        os.environ.update(HOME=self.home, USER=self.name, LOGNAME=self.name)
        if not self.switches:
            return
        try:
            os.setgroups(list(self.groups))
            os.setresgid(self.gid, self.gid, self.gid)
            os.setresuid(self.uid, self.uid, self.uid)
        except OSError as e:
            raise BadCredentials(f"--user {self.name}: cannot switch to uid {self.uid}: {e.strerror}") from e
        if self.uid != 0:
            try:
                os.setuid(0)
            except PermissionError:
                return
            raise BadCredentials(f"--user {self.name}: root could be regained after the switch")


def parseUmask(text: str) -> int:
    """
    C{--umask 027} (octal).

    @raise ValueError: Not an octal mode.
    """
    value = int(text, 8)
    if not 0 <= value <= 0o777:
        raise ValueError(text)
    return value


class PrivilegeDrop(Service):
    """
    The last of the master's services to start while root (every service
    that binds a socket or reads a file as root starts before it: the
    master's endpoints, a control socket, a metrics endpoint): writes the
    pid file, gives the UNIX socket files to the target user, then drops
    privileges, before the reactor runs and any worker is spawned.

    @ivar _ownedPaths: The files to give to the target user.
    @ivar _failed: Called with a one-line reason if the drop fails (it
        closes what was bound and exits).
    """

    name = "privileges"
    _log = Logger()

    def __init__(
        self,
        reactor: IReactorCore,
        credentials: Credentials | None,
        pidfile: PIDFile | None,
        ownedPaths: Callable[[], Iterable[str]],
        failed: Callable[[str], object],
    ) -> None:
        self._reactor = reactor
        self._credentials = credentials
        self._pidfile = pidfile
        self._ownedPaths = ownedPaths
        self._failed = failed

    def startService(self) -> None:
        super().startService()
        credentials = self._credentials
        switching = credentials is not None and credentials.switches
        owner = (credentials.uid, credentials.gid) if credentials is not None and switching else None
        try:
            if self._pidfile is not None:
                self._pidfile.write(owner)
                self._reactor.addSystemEventTrigger("after", "shutdown", self._pidfile.remove)
            if credentials is not None:
                for path in self._ownedPaths():
                    credentials.chown(path)
                credentials.drop()
        except (OSError, BadCredentials) as e:
            if self._pidfile is not None:
                self._pidfile.remove()
            self._failed(str(e) if isinstance(e, BadCredentials) else f"{e.filename}: {e.strerror}")
            return
        if credentials is not None and switching:
            self._log.info(
                "running as {user} (uid {uid}, gid {gid}, groups {groups})",
                user=credentials.name,
                uid=credentials.uid,
                gid=credentials.gid,
                groups=",".join(map(str, credentials.groups)),
            )
