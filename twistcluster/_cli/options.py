# -*- test-case-name: tests.test_tap, tests.test_subcommand -*-
"""
C{twist cluster}'s options, parsed and checked before C{twist} installs the
reactor: FACTORY is loaded (with pyOpenSSL left out of the master where it
can be) or the subcommand's options parsed, so bad input stops the master
with one line before anything is bound.  The service they make is
L{twistcluster._cli.tap}'s.

    twist cluster [options] FACTORY
    twist cluster [options] -- SUBCOMMAND [its options]
"""

from __future__ import annotations

import os
import sys
from typing import Any, NoReturn

from twisted.python import usage

from .._common.endpoints import isDatagram, needsTLS, specFromDescription
from .._common.factory import BadFactory, loadDatagramProtocols, loadFactory
from .._common.policies import schedulingPolicy
from .._master.carried import STATE_VARIABLE
from .errors import fail
from .serviceoptions import checkFactoryAs, serviceOptions
from .subcommand import plugins

__all__ = ["KEEP_TLS", "Options", "leaveOutTLS"]


class Options(usage.Options):
    synopsis = "[options] FACTORY | [options] -- SUBCOMMAND [its options]"
    longdesc = (
        "Serve FACTORY (a dotted name: a protocol factory instance, a factory "
        "class, or a zero-argument callable returning one) on N worker "
        "processes behind the --listen endpoints, which the master owns.  "
        "Or run another twist plugin (SUBCOMMAND, e.g. web) in every worker, "
        "its listens going through the master."
    )
    optParameters = [
        ["workers", "w", None, "Worker processes. [default: the number of CPUs]"],
        [
            "shutdown-timeout",
            None,
            "30",
            "Seconds a stopping worker may take to finish its connections before it is killed.",
        ],
        [
            "worker-timeout",
            None,
            "30",
            "Seconds a ready worker may leave its heartbeat unanswered before it is aborted and replaced.",
        ],
        ["boot-timeout", None, "60", "Seconds a new worker may take to become ready."],
        [
            "max-connections",
            None,
            None,
            "Replace a worker (gracefully) after it took this many connections, plus up to 10% jitter.",
        ],
        [
            "max-memory",
            None,
            None,
            "Replace a worker (gracefully) whose resident memory exceeds SIZE (bytes, or with K, M, G).",
        ],
        [
            "drain-delay",
            None,
            "0",
            "Seconds to keep accepting after TERM/INT while health checks and the agent "
            "report draining, before stopping gracefully.",
        ],
        ["agent", None, None, "Answer HAProxy agent checks on this endpoint (the host's weight)."],
        [
            "scheduling",
            None,
            None,
            "How connections are spread over the workers: rr, least-conn, none "
            "or reuseport. [default: $TWISTCLUSTER_SCHED_POLICY, or rr]",
        ],
        [
            "control",
            None,
            None,
            "The control socket's path (for the twistcluster command), or none. "
            "[default: RUNDIR/twistcluster/PID.sock]",
        ],
        [
            "metrics",
            None,
            None,
            "Serve /metrics (Prometheus), /healthz and /livez on this endpoint, e.g. "
            "tcp:9100:interface=127.0.0.1. [default: off]",
        ],
        [
            "user",
            None,
            None,
            "Serve as this user (a name or uid): bind and read TLS keys as root, then drop privileges.",
        ],
        ["group", None, None, "With --user, serve as this group (a name or gid). [default: the user's]"],
        ["umask", None, None, "The umask (octal, e.g. 027) of the master and its workers."],
        ["pidfile", None, None, "Write the master's pid to this file while it runs."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        # As the master started, before anything takes from it: an upgrade
        # runs the same command again in it.
        self["environ"] = {k: v for k, v in os.environ.items() if k != KEEP_TLS}

    def opt_version(self) -> NoReturn:
        """
        Print twistcluster's version (and Twisted's and Python's), then exit.
        """
        import platform

        import twisted

        from .._version import __version__

        sys.stdout.write(
            f"twistcluster {__version__} (Twisted {twisted.__version__}, "
            f"{platform.python_implementation()} {platform.python_version()})\n"
        )
        sys.stdout.flush()
        raise SystemExit(0)

    def opt_listen(self, description: str) -> None:
        """
        A Twisted server endpoint to serve, or udp:PORT (repeatable). [default: tcp:8080]
        """
        self["listen"].append(description)

    def parseArgs(self, *arguments: str) -> None:
        self["factory"] = self["subcommand"] = None
        self["subArguments"] = []
        if arguments and arguments[0] in plugins():
            self["subcommand"], *self["subArguments"] = arguments
        elif len(arguments) == 1:
            self["factory"] = arguments[0]
        elif arguments and "." not in arguments[0]:
            fail(f"no twist plugin is called {arguments[0]!r} (installed: {', '.join(sorted(plugins()))})")
        else:
            fail(f"give exactly one FACTORY (a dotted name), not {len(arguments)}")

    def postOptions(self) -> None:
        if self["workers"] is None:
            self["workers"] = len(os.sched_getaffinity(0))
        else:
            self["workers"] = _number("--workers", self["workers"], int, minimum=1)
        for name in ("shutdown-timeout", "worker-timeout", "boot-timeout", "drain-delay"):
            self[name] = _number(f"--{name}", self[name], float, minimum=0)
        if self["max-connections"] is not None:
            self["max-connections"] = _number("--max-connections", self["max-connections"], int, minimum=1)
        if self["max-memory"] is not None:
            self["max-memory"] = _size("--max-memory", self["max-memory"])
        if self["subcommand"] is not None:
            if self["listen"]:
                fail(f"--listen is for a FACTORY; give {self['subcommand']} its own listen options")
        elif not self["listen"]:
            self["listen"] = ["tcp:8080"]
        try:
            self["scheduling"] = schedulingPolicy(self["scheduling"], os.environ)
        except ValueError as e:
            fail(str(e))
        serviceOptions(self)
        if self["factory"] is not None:
            # Before the factory is loaded as one kind or the other.
            _checkKinds(self["listen"])
            if STATE_VARIABLE in os.environ:
                # A master taking over after an upgrade: its check loaded
                # FACTORY moments ago, and clients wait in the backlog.
                if not any(needsTLS(d) for d in self["listen"]):
                    leaveOutTLS()
            elif self["switchesUser"]:
                # Checked as that user: user code never runs as root.
                checkFactoryAs(self, self["factory"], self["listen"], leaveOutTLS)
            else:
                # Before twist installs the reactor: see leaveOutTLS.
                _checkFactory(self["factory"], self["listen"])
        if self["agent"] is not None:
            # After the factory: parsing imports Twisted's endpoints.
            try:
                specFromDescription(self["agent"])
            except ValueError as e:
                fail(f"--agent {self['agent']!r}: {e}")


#: In the environment of a master that started itself again to keep
#: pyOpenSSL (see L{_checkFactory}); read once, and removed.
KEEP_TLS = "TWISTCLUSTER_MASTER_KEEPS_TLS"


def leaveOutTLS(modules: dict[str, Any] = sys.modules) -> bool:
    """
    Keep pyOpenSSL (and with it cryptography, 13 MiB resident) out of this
    process, if neither it nor the reactor is imported yet: the master never
    speaks TLS (for C{ssl:} the workers do), but Twisted's reactor and
    endpoints import it whenever they can.  Twisted then behaves as if it
    were not installed; the workers still have it.  (A reactor chosen with
    C{twist --reactor} is installed before this can run.)

    @return: Whether it is left out.
    """
    if "OpenSSL" in modules:
        return modules["OpenSSL"] is None
    if "twisted.internet.reactor" in modules:
        return False
    # A None entry makes `import OpenSSL` raise ImportError (the import
    # system's documented way to block a module).
    modules["OpenSSL"] = None
    return True


def _restartKeepingTLS() -> NoReturn:
    """
    Start this master again from the beginning, as the same process (its pid
    is what supervisors, systemd and signals know), keeping pyOpenSSL: what
    was imported without it cannot be imported again with it.
    """
    os.environ[KEEP_TLS] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


def _number(option: str, text: Any, kind: type, minimum: float) -> Any:
    try:
        value = kind(text)
    except (TypeError, ValueError):
        fail(f"{option} takes a number, not {text!r}")
    if value < minimum:
        fail(f"{option} must be at least {minimum:g}, not {text}")
    return value


_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def _size(option: str, text: str) -> int:
    """
    A size in bytes from C{"512M"}, C{"2G"}, C{"100000K"} or C{"1048576"}.
    """
    number, unit = text.strip().upper().rstrip("IB"), ""
    if number and number[-1] in _UNITS:
        number, unit = number[:-1], number[-1]
    try:
        value = float(number) * _UNITS[unit]
    except ValueError:
        fail(f"{option} takes a size such as 512M or 2G, not {text!r}")
    if value < 1:
        fail(f"{option} must be positive, not {text!r}")
    return int(value)


def _checkKinds(descriptions: list[str]) -> None:
    """
    One FACTORY serves every listen: datagram endpoints (a DatagramProtocol)
    cannot be mixed with stream endpoints (a protocol factory).
    """
    datagram = [d for d in descriptions if isDatagram(d)]
    if datagram and len(datagram) != len(descriptions):
        stream = next(d for d in descriptions if not isDatagram(d))
        fail(
            f"--listen {datagram[0]!r}: udp cannot be mixed with stream endpoints such as {stream!r}"
            " (one FACTORY serves them all: a DatagramProtocol for udp, a protocol factory otherwise)"
        )


def _checkFactory(name: str, descriptions: list[str]) -> None:
    """
    Resolve FACTORY as `python -m` would, from the current directory, and as
    the workers will: a protocol factory, or datagram protocols for udp:.

    A master whose listens are all plain (L{needsTLS}) does it with pyOpenSSL
    left out (L{leaveOutTLS}), and it stays out.  If FACTORY then does not
    load, for whatever reason, the master starts again keeping pyOpenSSL:
    a factory that imports it loads, and the error a bad one gives is never
    one that leaving it out caused.
    """
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    keepTLS = os.environ.pop(KEEP_TLS, None) is not None
    leftOut = not keepTLS and not any(needsTLS(d) for d in descriptions) and leaveOutTLS()
    try:
        if descriptions and isDatagram(descriptions[0]):
            loadDatagramProtocols(name, len(descriptions))
        else:
            loadFactory(name)
    except BadFactory as e:
        if leftOut:
            _restartKeepingTLS()
        fail(f"FACTORY: {e}")
