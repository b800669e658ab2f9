# -*- test-case-name: tests.test_subcommand -*-
"""
Any other C{twist} plugin, clustered: C{twist cluster -- web --listen
tcp:8080 --path /srv/www}.

The master parses the subcommand's options with the plugin's own C{Options}
(so bad ones fail before any worker starts) and finds the endpoints it
listens on, which it binds and grants.  Each worker builds the plugin's
service from the same options and starts it on its reactor, whose listens go
through the master: the plugin runs unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from twisted.application.service import Application, IService, IServiceMaker
from twisted.internet.interfaces import IReactorCore
from twisted.plugin import getPlugins
from twisted.python import usage

#: Options whose values are lists of server endpoint descriptions.
#: (C{web}'s C{--listen}, C{--port} and C{--https} all end up in C{ports}.)
ENDPOINT_LISTS = ("ports", "listen", "endpoints")


class BadSubcommand(ValueError):
    """
    No such plugin, or its options are wrong; the message says which, in one
    line.
    """


def plugins() -> dict[str, IServiceMaker]:
    """
    The C{twist} plugins installed here, by subcommand name (but this one).
    """
    return {p.tapname: p for p in getPlugins(IServiceMaker) if p.tapname != "cluster"}


def parseSubcommand(name: str, arguments: Sequence[str]) -> usage.Options:
    """
    Parse a subcommand's options as C{twist NAME ARGUMENTS} would.

    @raise BadSubcommand: No plugin is called C{name}, or the options are
        wrong.
    """
    found = plugins().get(name)
    if found is None:
        raise BadSubcommand(f"no twist plugin is called {name!r} (installed: {', '.join(sorted(plugins()))})")
    options: usage.Options = found.options()
    try:
        options.parseOptions(list(arguments))
    except usage.UsageError as e:
        raise BadSubcommand(f"{name}: {e}") from e
    return options


def endpointsOf(options: usage.Options) -> list[str] | None:
    """
    The server endpoint descriptions a plugin's parsed options listen on.

    @return: The descriptions; L{None} if the options have none the master
        recognises, so that it must grant any listen the workers ask for.
    """
    found: list[str] = []
    for key in ENDPOINT_LISTS:
        value = options.get(key)
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            found += [v for v in value if v not in found]
    return found or None


def startSubcommand(
    reactor: IReactorCore, name: str, arguments: Sequence[str], shareOnly: Callable[[list[str] | None], Any]
) -> IService:
    """
    In a worker: build the plugin's service from its options and start it,
    as C{twist NAME ARGUMENTS} does.  The worker's reactor routes the
    plugin's own listens through the master (C{shareOnly} is told which they
    are, and returns a L{twistcluster._worker.routing.CommandLineListens});
    those it makes later, at run time, stay in the worker.
    """
    options = parseSubcommand(name, arguments)
    service: IService = plugins()[name].makeService(options)
    service.setServiceParent(Application(name))
    listens = shareOnly(endpointsOf(options))
    listens.starting = True
    try:
        service.startService()
    finally:
        listens.starting = False
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    return service
