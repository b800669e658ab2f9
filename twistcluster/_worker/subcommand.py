# -*- test-case-name: tests.test_subcommand -*-
"""
Another C{twist} plugin in a worker (C{twist cluster -- web ...}): its
service, built from the same options the master checked, started on the
worker's reactor.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from twisted.application.service import Application, IService
from twisted.internet.interfaces import IReactorCore

from .._common.plugins import endpointsOf, pluginOptions


def startSubcommand(
    reactor: IReactorCore, name: str, arguments: Sequence[str], shareOnly: Callable[[list[str] | None], Any]
) -> IService:
    """
    Build the plugin's service from its options and start it, as C{twist
    NAME ARGUMENTS} does.  The worker's reactor routes the plugin's own
    listens through the master (C{shareOnly} is told which they are, and
    returns a L{twistcluster._worker.routing.CommandLineListens}); those it
    makes later, at run time, stay in the worker.
    """
    maker, options = pluginOptions(name, arguments)
    service: IService = maker.makeService(options)
    service.setServiceParent(Application(name))
    listens = shareOnly(endpointsOf(options))
    listens.starting = True
    try:
        service.startService()
    finally:
        listens.starting = False
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    return service
