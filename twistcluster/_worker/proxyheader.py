# -*- test-case-name: tests.test_client_address -*-
"""
C{haproxy:} listens in a worker: Twisted's PROXY protocol wrapper, which
refuses (closes) a connection that does not start with a valid PROXY v1 or
v2 header, with that refusal logged, once per listen.

Twisted refuses such connections without a word, so a balancer configured
without C{send-proxy-v2} (or a client that reaches the port directly) only
shows as connections closed for no visible reason.  One line per connection
would let any client fill the log; one per listen says what is wrong.

The C{haproxy:} endpoint parser wraps the user's factory in Twisted's
wrapping factory; L{loggingRefusals} swaps it for a L{RefusalLoggingFactory}
when the listen reaches the worker's reactor.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import ILoggingContext, IProtocol, IProtocolFactory
from twisted.logger import Logger
from twisted.protocols.policies import WrappingFactory

from .._common.twistedinternals import HAProxyProtocolWrapper, HAProxyWrappingFactory, proxyHeaderRead


class _RefusalLoggingWrapper(HAProxyProtocolWrapper):
    def __init__(self, factory: RefusalLoggingFactory, wrappedProtocol: IProtocol) -> None:
        super().__init__(factory, wrappedProtocol)
        self._refusals = factory

    def dataReceived(self, data: bytes) -> None:
        if proxyHeaderRead(self):
            self.wrappedProtocol.dataReceived(data)
            return
        super().dataReceived(data)
        # Still no header, and closing: the wrapper refused this connection.
        if not proxyHeaderRead(self) and self.disconnecting:
            self._refusals.refused(self.getPeer())


class RefusalLoggingFactory(WrappingFactory[_RefusalLoggingWrapper]):
    """
    Twisted's PROXY protocol wrapping factory, logging the first connection
    it refuses.

    @ivar refusals: How many connections it refused.
    """

    protocol = _RefusalLoggingWrapper
    _log = Logger()

    def __init__(self, wrappedFactory: IProtocolFactory) -> None:
        super().__init__(wrappedFactory)
        self.refusals = 0

    def logPrefix(self) -> str:
        # As Twisted's: the user's factory, marked.
        if ILoggingContext.providedBy(self.wrappedFactory):
            prefix: str = self.wrappedFactory.logPrefix()
        else:
            prefix = type(self.wrappedFactory).__name__
        return f"{prefix} (PROXY)"

    def refused(self, peer: Any) -> None:
        self.refusals += 1
        if self.refusals == 1:
            self._log.warn(
                "refused a connection from {peer} on a haproxy: listen: it did not start with a "
                "valid PROXY protocol header (HAProxy sends one with send-proxy-v2 on the server "
                "line); this worker refuses further ones on this listen without a log line",
                peer=f"{getattr(peer, 'host', peer)}:{getattr(peer, 'port', '')}".rstrip(":"),
            )


def loggingRefusals(factory: Any) -> Any:
    """
    C{factory}, or if it is Twisted's PROXY protocol wrapping factory, an
    equivalent one that logs the first connection it refuses.
    """
    if type(factory) is HAProxyWrappingFactory:
        return RefusalLoggingFactory(factory.wrappedFactory)
    return factory
