# -*- test-case-name: tests.test_subcommand -*-
"""
The other C{twist} plugins (C{twist cluster -- web ...}): found and their
options parsed the same way by the master (which checks them, and binds the
endpoints they name) and by each worker (which runs the plugin).
"""

from __future__ import annotations

from collections.abc import Sequence

from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins
from twisted.python import usage

#: Options whose values are lists of server endpoint descriptions.
#: (C{web}'s C{--listen}, C{--port} and C{--https} all end up in C{ports}.)
ENDPOINT_LISTS = ("ports", "listen", "endpoints")


def plugins() -> dict[str, IServiceMaker]:
    """
    The C{twist} plugins installed here, by subcommand name (but this one).
    """
    return {p.tapname: p for p in getPlugins(IServiceMaker) if p.tapname != "cluster"}


def pluginOptions(name: str, arguments: Sequence[str]) -> tuple[IServiceMaker, usage.Options]:
    """
    The plugin called C{name}, and its options parsed from C{arguments} as
    C{twist NAME ARGUMENTS} would.

    @raise KeyError: No plugin is called C{name}.
    @raise usage.UsageError: The options are wrong.
    """
    maker = plugins()[name]
    options: usage.Options = maker.options()
    options.parseOptions(list(arguments))
    return maker, options


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
