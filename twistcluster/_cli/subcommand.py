# -*- test-case-name: tests.test_subcommand -*-
"""
Any other C{twist} plugin, clustered: C{twist cluster -- web --listen
tcp:8080 --path /srv/www}.

The master parses the subcommand's options with the plugin's own C{Options}
(so bad ones fail before any worker starts) and finds the endpoints it
listens on, which it binds and grants.  Each worker builds the plugin's
service from the same options and starts it on its reactor, whose listens go
through the master: the plugin runs unchanged
(L{twistcluster._worker.subcommand}).
"""

from __future__ import annotations

from collections.abc import Sequence

from twisted.python import usage

from .._common.plugins import endpointsOf, pluginOptions, plugins

__all__ = ["BadSubcommand", "endpointsOf", "parseSubcommand", "plugins"]


class BadSubcommand(ValueError):
    """
    No such plugin, or its options are wrong; the message says which, in one
    line.
    """


def parseSubcommand(name: str, arguments: Sequence[str]) -> usage.Options:
    """
    Parse a subcommand's options as C{twist NAME ARGUMENTS} would.

    @raise BadSubcommand: No plugin is called C{name}, or the options are
        wrong.
    """
    try:
        return pluginOptions(name, arguments)[1]
    except KeyError:
        raise BadSubcommand(
            f"no twist plugin is called {name!r} (installed: {', '.join(sorted(plugins()))})"
        ) from None
    except usage.UsageError as e:
        raise BadSubcommand(f"{name}: {e}") from e
    except Exception as e:
        # A plugin's own option handler failing (twist words --group, twist
        # mail --user, on Python 3): its error, on one line.
        raise BadSubcommand(f"{name}: its options failed: {type(e).__name__}: {e}") from e
