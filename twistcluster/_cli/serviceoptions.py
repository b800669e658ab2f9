# -*- test-case-name: tests.test_privileges -*-
"""
C{twist cluster}'s service options: C{--user}, C{--group}, C{--umask} and
C{--pidfile}, and how the master starts with them: as root until everything
is bound and read, then as the target user.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from attrs import define, field
from twisted.internet.interfaces import IReactorCore

from .._common.endpoints import isDatagram, needsTLS
from .._common.policies import SchedulingPolicy
from .._master.pidfile import PIDFile, PIDFileBusy
from .._master.privileges import BadCredentials, Credentials, PrivilegeDrop, parseUmask
from .._master.sdnotify import MASTER_ONLY_VARIABLES
from .._master.secrets import KeptFiles
from .check import checkAs as _runCheckAs
from .errors import EX_START, fail

if TYPE_CHECKING:
    from .._master.service import Master


def serviceOptions(options: Any) -> None:
    """
    Resolve C{--user}/C{--group} (one-line error and exit 64 for an unknown
    user or group, or C{--user} without root unless it names the user
    already running) and C{--umask}.
    """
    options["credentials"] = None
    if options["group"] is not None and options["user"] is None:
        fail(f"--group {options['group']}: give --user too")
    if options["user"] is not None:
        try:
            options["credentials"] = Credentials.resolve(options["user"], options["group"])
            options["credentials"].checkAllowed()
        except BadCredentials as e:
            fail(str(e))
    options["switchesUser"] = options["credentials"] is not None and options["credentials"].switches
    if options["umask"] is not None:
        try:
            options["umask"] = parseUmask(options["umask"])
        except ValueError:
            fail(f"--umask takes an octal mode such as 027, not {options['umask']!r}")


def checkAs(options: Any, arguments: list[str]) -> dict[str, Any]:
    """
    Run the check of user code (L{twistcluster._cli.check}) as the target
    user; fail with its one-line error.
    """
    environ = {k: v for k, v in os.environ.items() if k not in MASTER_ONLY_VARIABLES}
    umask = -1 if options["umask"] is None else options["umask"]
    answer = _runCheckAs(options["credentials"], arguments, environ, umask)
    if "error" in answer:
        fail(answer["error"])
    return answer


def checkFactoryAs(
    options: Any, name: str, descriptions: list[str], leaveOutTLS: Callable[[], object]
) -> None:
    """
    FACTORY loads as the target user; the master, which never loads it,
    leaves pyOpenSSL out if its listens are all plain.
    """
    if not any(needsTLS(d) for d in descriptions):
        leaveOutTLS()
    datagram = ["--datagram", str(len(descriptions))] if descriptions and isDatagram(descriptions[0]) else []
    checkAs(options, ["--factory", name, *datagram])


@define
class PrivilegedStart:
    """
    What the master does as root, and the service that ends it.
    """

    options: Any
    pidfile: PIDFile | None
    kept: KeptFiles = field(factory=KeptFiles)

    @classmethod
    def fromOptions(cls, options: Any, pid: int | None = None) -> PrivilegedStart:
        """
        Apply C{--umask}; refuse a pid file another live master holds
        (exit 1), before anything is bound.

        @param pid: The master's pid, if not this process's (the check of
            an upgrade runs for it).
        """
        if options["umask"] is not None:
            os.umask(options["umask"])
        pidfile = None
        if options["pidfile"] is not None:
            pidfile = PIDFile(options["pidfile"], pid)
            try:
                pidfile.check()
            except PIDFileBusy as e:
                fail(str(e), EX_START)
            except OSError as e:
                fail(f"--pidfile {pidfile.path}: {e.strerror}", EX_START)
        return cls(options, pidfile)

    def workerArguments(self, arguments: list[str]) -> list[str]:
        """
        Under C{--user}: the TLS files the workers could not read as that
        user are read now, and the workers' arguments name their copies.
        """
        if not self.options["switchesUser"]:
            return arguments
        return [self.kept.rewrite(argument) for argument in arguments]

    def service(
        self, reactor: IReactorCore, master: Master, failed: Callable[[str], object] | None = None
    ) -> PrivilegeDrop:
        """
        Fit C{master} for serving as the target user, and the service that
        drops to it.

        @param failed: Called with the one-line reason if the drop fails,
            once the master's sockets are closed (it exits); by default the
            master exits with status 1.
        """
        options = self.options
        if options["switchesUser"] and options["scheduling"] is SchedulingPolicy.REUSEPORT:
            master.handles.reusePortSockets = options["workers"]
            master.supervisor.maxSize = (
                options["workers"],
                "under --user with reuseport, the master bound one socket per configured worker "
                "before dropping privileges and cannot bind more",
            )

        def dropFailed(reason: str) -> None:
            for handle in master.handles:
                handle.closeNow()
            if failed is not None:
                failed(reason)
            fail(reason, EX_START)

        return PrivilegeDrop(
            reactor,
            options["credentials"],
            self.pidfile,
            lambda: [h.spec.address for h in master.handles if h.spec.kind == "unix" and h.spec.fd < 0],
            dropFailed,
        )
