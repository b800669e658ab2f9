# -*- test-case-name: tests.test_tap -*-
"""
C{twist cluster}: the command line, and the service it makes.

    twist cluster [options] FACTORY
    twist cluster [options] -- SUBCOMMAND [its options]
"""

from __future__ import annotations

import os
import sys
from typing import Any, NoReturn

from twisted.application.reactors import getReactorTypes
from twisted.application.service import IService, MultiService
from twisted.python import usage

from ._endpoints import ListenSpec, specFromDescription
from ._factory import BadFactory, loadFactory
from ._master import Master, StartupError
from ._subcommand import BadSubcommand, endpointsOf, parseSubcommand, plugins

#: The exit status for a bad command line (BSD's EX_USAGE, as twist uses).
EX_USAGE = 64
#: The exit status when the master cannot start (an address in use, ...).
EX_START = 1


def fail(message: str, status: int = EX_USAGE) -> NoReturn:
    """
    Stop with a one-line error naming the culprit, and a non-zero status.
    """
    sys.stderr.write(f"twist cluster: error: {message}\n")
    sys.stderr.flush()
    raise SystemExit(status)


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
            "Seconds a worker may fail its heartbeat before it is replaced.",
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []

    def opt_listen(self, description: str) -> None:
        """
        A Twisted server endpoint to serve (repeatable). [default: tcp:8080]
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
        for name in ("shutdown-timeout", "worker-timeout"):
            self[name] = _number(f"--{name}", self[name], float, minimum=0)
        if self["subcommand"] is not None:
            if self["listen"]:
                fail(f"--listen is for a FACTORY; give {self['subcommand']} its own listen options")
        elif not self["listen"]:
            self["listen"] = ["tcp:8080"]


def _number(option: str, text: Any, kind: type, minimum: float) -> Any:
    try:
        value = kind(text)
    except (TypeError, ValueError):
        fail(f"{option} takes a number, not {text!r}")
    if value < minimum:
        fail(f"{option} must be at least {minimum:g}, not {text}")
    return value


def _reactorName(reactor: Any) -> str | None:
    """
    The C{--reactor} name of the running reactor, so workers run the same one.
    """
    module = type(reactor).__module__
    for installer in getReactorTypes():
        if installer.moduleName == module:
            return installer.shortName
    return None


def _parseListens(descriptions: list[str], culprit: str) -> list[tuple[str, ListenSpec]]:
    listens = []
    for description in descriptions:
        try:
            spec: ListenSpec = specFromDescription(description)
        except ValueError as e:
            fail(f"{culprit} {description!r}: {e}")
        listens.append((description, spec))
    return listens


def _factoryMode(options: Options) -> tuple[list[tuple[str, ListenSpec]], list[str], bool]:
    try:
        loadFactory(options["factory"])
    except BadFactory as e:
        fail(f"FACTORY: {e}")
    listens = _parseListens(options["listen"], "--listen")
    workerArguments = ["--factory", options["factory"]]
    for description in options["listen"]:
        workerArguments += ["--listen", description]
    return listens, workerArguments, False


def _subcommandMode(options: Options) -> tuple[list[tuple[str, ListenSpec]], list[str], bool]:
    name = options["subcommand"]
    try:
        subOptions = parseSubcommand(name, options["subArguments"])
    except BadSubcommand as e:
        fail(str(e))
    descriptions = endpointsOf(subOptions)
    listens = _parseListens(descriptions or [], f"{name}: listen")
    return listens, ["--subcommand", name], descriptions is None


def makeService(options: Options) -> IService:
    from twisted.internet import reactor

    # Resolve names as `python -m` would: from the current directory.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    if options["subcommand"] is None:
        listens, workerArguments, grantAny = _factoryMode(options)
    else:
        listens, workerArguments, grantAny = _subcommandMode(options)
    workerArguments += ["--shutdown-timeout", str(options["shutdown-timeout"])]
    reactorName = _reactorName(reactor)
    if reactorName is not None:
        workerArguments += ["--reactor", reactorName]
    if options["subcommand"] is not None:
        workerArguments += ["--", *options["subArguments"]]

    master = _StartChecked(
        reactor,
        listens,
        workerArguments,
        workers=options["workers"],
        shutdownTimeout=options["shutdown-timeout"],
        grantAny=grantAny,
    )
    service = MultiService()
    master.setServiceParent(service)
    return service


class _StartChecked(Master):
    """
    The master, turning a start-up failure into a one-line error and a
    non-zero exit (twist would print a traceback).
    """

    def startService(self) -> None:
        try:
            super().startService()
        except StartupError as e:
            fail(str(e), EX_START)
