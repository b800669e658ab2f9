# -*- test-case-name: tests.test_tap -*-
"""
C{twist cluster}: the service its options (L{twistcluster._cli.options})
make: the master, with what its operators reach it through, and the
privilege drop that starts last.  The C{twist} plugin names this module:
it has the L{Options} and L{makeService} C{twist} looks for.
"""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING, Any

from twisted.application.reactors import getReactorTypes
from twisted.application.service import IService, MultiService
from twisted.logger import Logger

from .._common.endpoints import ListenSpec, specFromDescription, workerDescription
from .._common.reactors import ICommandLineReactor, IEndpointReactor, narrowed
from .errors import EX_START, EX_USAGE, fail
from .options import Options
from .serviceoptions import PrivilegedStart, checkAs
from .sharedstate import sharedStateWarning
from .subcommand import BadSubcommand, endpointsOf, parseSubcommand

if TYPE_CHECKING:
    from .._master.service import Master

__all__ = ["EX_START", "EX_USAGE", "Options", "fail", "makeService"]

_log = Logger()


def _reactorName(reactor: object) -> str | None:
    """
    The C{--reactor} name of the running reactor, so workers run the same one.
    """
    module = type(reactor).__module__
    for installer in getReactorTypes():
        # Twisted's own installers have a moduleName; IReactorInstaller does not say so.
        if getattr(installer, "moduleName", None) == module:
            name: str = installer.shortName
            return name
    return None


def _parseListens(descriptions: list[str], culprit: str = "--listen") -> list[tuple[str, ListenSpec]]:
    listens: list[tuple[str, ListenSpec]] = []
    for description in descriptions:
        try:
            spec = specFromDescription(description)
        except ValueError as e:
            fail(f"{culprit} {description!r}: {e}")
        for earlier, earlierSpec in listens:
            if spec.fd >= 0 and spec.fd == earlierSpec.fd:
                fail(
                    f"--listen {description!r}: the inherited socket (fd {spec.fd}) "
                    f"is already served by {earlier!r}"
                )
        listens.append((description, spec))
    return listens


def _factoryMode(options: Options) -> tuple[list[tuple[str, ListenSpec]], list[str], bool]:
    listens = _parseListens(options["listen"])
    workerArguments = ["--factory", options["factory"]]
    for description, spec in listens:
        workerArguments += ["--listen", workerDescription(description, spec)]
    return listens, workerArguments, False


def _subcommandMode(options: Options) -> tuple[list[tuple[str, ListenSpec]], list[str], bool]:
    """
    Another twist plugin in every worker: the master parses its options (as
    the workers will, from the current directory), and binds and grants the
    endpoints they name; if they name none it recognises, it grants any.
    """
    name = options["subcommand"]
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    if options["switchesUser"]:
        # Parsed as that user: the plugin is user code too.
        descriptions = checkAs(options, ["--subcommand", name, *options["subArguments"]])["endpoints"]
    else:
        try:
            subOptions = parseSubcommand(name, options["subArguments"])
        except BadSubcommand as e:
            fail(str(e))
        descriptions = endpointsOf(subOptions)
        warning = sharedStateWarning(name, subOptions)
        if warning is not None:
            _log.warn("{warning}", warning=warning)
    listens = _parseListens(descriptions or [], f"{name}: listen")
    return listens, ["--subcommand", name], descriptions is None


def _checkEndpoint(reactor: IEndpointReactor, option: str, description: str) -> None:
    from twisted.internet.endpoints import serverFromString

    try:
        serverFromString(reactor, description)
    except (ValueError, TypeError, KeyError) as e:
        fail(f"{option} {description!r}: {e}")


def makeService(options: Options) -> IService:
    from twisted.internet import reactor as installed
    from twisted.logger import Logger

    from .._common.proctitle import masterTitle
    from .._master.carried import CHECK_VARIABLE, UnreadableState
    from .._master.cockpit import operate
    from .._master.limits import Limits
    from .._master.logfile import ReopenableLogFile
    from .._master.relaunch import resolved, thisLaunch, thisRunSpec
    from .._master.resume import Resumption
    from .._master.sdnotify import ServiceNotifier, takeServiceManagerEnvironment
    from .._master.service import Master
    from .._version import __version__

    reactor = narrowed(installed, ICommandLineReactor)
    try:
        resumption = Resumption.fromEnvironment(os.environ)
    except UnreadableState as e:
        fail(str(e), EX_START)
    checking = os.environ.pop(CHECK_VARIABLE, None)
    checked = None if checking is None else json.loads(checking)
    # The umask, and a pid file another master holds, before anything else
    # (an upgrade's check: the master it checks for holds it).
    privileged = PrivilegedStart.fromOptions(options, None if checked is None else checked.get("pid"))
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
    workerArguments = privileged.workerArguments(workerArguments)

    if options["metrics"] is not None:
        _checkEndpoint(reactor, "--metrics", options["metrics"])
    # The master with its operator services, once made: a failed start
    # removes what they left on disk.
    operated: list[Any] = []

    def failedToStart(message: str) -> None:
        for service in operated:
            service.abandon()
        fail(message, EX_START)

    limits = Limits(
        shutdownTimeout=options["shutdown-timeout"],
        workerTimeout=options["worker-timeout"],
        bootTimeout=options["boot-timeout"],
        maxConnections=options["max-connections"],
        maxMemory=options["max-memory"],
        drainDelay=options["drain-delay"],
    )
    # Read once (the listens above are parsed), then out of the environment
    # every worker inherits.
    managerEnvironment = takeServiceManagerEnvironment(os.environ)
    try:
        notifier = ServiceNotifier.fromEnvironment(reactor, managerEnvironment, os.getpid())
    except ValueError as e:
        Logger().warn("not notifying the service manager: {error}", error=str(e))
        notifier = ServiceNotifier(reactor)
    serving = options["factory"] or options["subcommand"]
    descriptions = [description for description, _ in listens]
    policyName = options["scheduling"].value

    master = Master(
        reactor,
        listens,
        workerArguments,
        options["workers"],
        limits,
        startupFailed=failedToStart,
        policy=options["scheduling"],
        grantAny=grantAny,
        notifier=notifier,
        logFile=ReopenableLogFile.fromTwistOptions(options),
        title=lambda workers: masterTitle(serving, descriptions, workers, policyName),
        passFDs=privileged.kept.childFDs,
        version=__version__,
        launch=thisLaunch(options["environ"]),
        previous=resolved(thisRunSpec()),
        resumption=resumption,
    )
    # A control socket made before the privilege drop belongs to the user dropped to.
    credentials = options["credentials"]
    owner = (credentials.uid, credentials.gid) if options["switchesUser"] else None
    operated.append(operate(reactor, master, options["control"], options["metrics"], failedToStart, owner))
    service = MultiService()
    if options["agent"] is not None:
        # Before the master: a bad agent address fails the start before any listen.
        _agentService(reactor, options["agent"], master, options["workers"]).setServiceParent(service)
    operated[0].setServiceParent(service)
    # Last: every service that binds or reads as root (the master's endpoints,
    # the control socket, --metrics) starts before it.
    privileged.service(reactor, master, failedToStart).setServiceParent(service)
    if checked is not None:
        from .._master.upgradecheck import answerCheck

        # An upgrade's check of this code: it got this far, and stops here.
        answerCheck(checked, listens, __version__)
    return service


def _agentService(reactor: IEndpointReactor, description: str, master: Master, workers: int) -> IService:
    from .._master.agent import AgentFactory, AgentService

    factory = AgentFactory(master.isStopping, lambda: master.supervisor.readyCount, workers)
    return AgentService(
        reactor, description, factory, failed=lambda message: fail(message, EX_START), upgrade=master.upgrade
    )
