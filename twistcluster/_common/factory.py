# -*- test-case-name: tests.test_factory -*-
"""
Find the user's protocol factory (or, for C{udp:} endpoints, datagram
protocol) from a dotted name, as C{python -m} would import it from the
current directory.
"""

from __future__ import annotations

from twisted.internet.interfaces import IProtocolFactory
from twisted.internet.protocol import AbstractDatagramProtocol
from twisted.python.reflect import namedAny


class BadFactory(ValueError):
    """
    The name does not lead to a protocol factory; the message says why, in one
    line.
    """


def loadFactory(name: str) -> IProtocolFactory:
    """
    Resolve C{name} to an L{IProtocolFactory}: an instance as it is, a factory
    class or a zero-argument callable by calling it.

    @raise BadFactory: The name cannot be imported, calling it fails, or what
        it gives is not a protocol factory.
    """
    found = _find(name)
    if IProtocolFactory.providedBy(found):
        return found
    if not callable(found):
        raise BadFactory(f"{name!r} is not a protocol factory (it is {_kind(found)})")
    try:
        made = found()
    except Exception as e:
        raise BadFactory(f"{name}() failed: {_oneLine(e)}") from e
    if not IProtocolFactory.providedBy(made):
        raise BadFactory(f"{name}() did not return a protocol factory (it returned {_kind(made)})")
    return made


def _find(name: str) -> object:
    """
    Import what the dotted C{name} names.

    @raise BadFactory: It is not a dotted name, or cannot be imported.
    """
    if "." not in name:
        raise BadFactory(f"{name!r} is not a dotted name (module.attribute)")
    try:
        return namedAny(name)
    except Exception as e:
        raise BadFactory(f"cannot import {name!r}: {_oneLine(e)}") from e


def _kind(obj: object) -> str:
    return f"a {type(obj).__module__}.{type(obj).__qualname__}"


def _oneLine(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def loadDatagramProtocols(name: str, count: int) -> list[AbstractDatagramProtocol]:
    """
    Resolve C{name} to C{count} datagram protocols, one per C{udp:} listen
    (a protocol serves one port): an instance as it is (so only one), a
    class or a zero-argument callable by calling it each time.

    @raise BadFactory: The name does not lead to a datagram protocol, or an
        instance would have to serve more than one port.
    """
    found = _find(name)
    if isinstance(found, AbstractDatagramProtocol):
        if count > 1:
            raise BadFactory(
                f"{name!r} is one DatagramProtocol instance, and it cannot serve {count} udp: endpoints"
                " (give its class or a callable)"
            )
        return [found]
    if not callable(found):
        raise BadFactory(f"{name!r} is not a DatagramProtocol (it is {_kind(found)})")
    protocols = []
    for _ in range(count):
        try:
            made = found()
        except Exception as e:
            raise BadFactory(f"{name}() failed: {_oneLine(e)}") from e
        if not isinstance(made, AbstractDatagramProtocol):
            raise BadFactory(f"{name}() did not return a DatagramProtocol (it returned {_kind(made)})")
        protocols.append(made)
    return protocols
