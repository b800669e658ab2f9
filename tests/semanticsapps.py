"""
Servers the tests of Twisted's semantics run under `twist cluster`
(resolved as tests.semanticsapps.NAME from the project root).
"""

import os
import sys
import threading

from twisted.internet.protocol import Factory, Protocol
from twisted.web.resource import Resource
from twisted.web.server import Site

WORKER_ID = os.environ.get("TWISTCLUSTER_WORKER_ID", "?")


class Boom(Resource):
    """
    A twisted.web resource whose GET raises: Twisted's own Request logs the
    failure.
    """

    isLeaf = True

    def render_GET(self, request):
        raise RuntimeError("deliberate")


def boomSite() -> Site:
    return Site(Boom())


class Printer(Protocol):
    """
    Greets with the worker's id; for C{print N}, writes a line of N MiB
    without a newline but at its end to stdout, from a thread (the worker
    keeps serving meanwhile), and says C{printing}.
    """

    def connectionMade(self) -> None:
        self.transport.write(f"worker={WORKER_ID}\n".encode())

    def dataReceived(self, data: bytes) -> None:
        command, _, size = data.strip().partition(b" ")
        if command == b"print":
            line = b"x" * (int(size) << 20) + b"\n"
            threading.Thread(target=_writeAll, args=(line,), daemon=True).start()
            self.transport.write(b"printing\n")


def _writeAll(data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(sys.stdout.fileno(), view) :]


class PrinterFactory(Factory):
    protocol = Printer


class RunTimeListener(Protocol):
    """
    For C{listen N}, listens on 127.0.0.1:N at run time, as passive FTP does,
    and answers C{port P} (what the port says it is bound to) or the error
    the listen raised; C{close} closes that port.
    """

    port = None

    def dataReceived(self, data: bytes) -> None:
        from twisted.internet import reactor

        command, _, argument = data.strip().partition(b" ")
        if command == b"listen":
            try:
                self.port = reactor.listenTCP(
                    int(argument), Factory.forProtocol(Protocol), interface="127.0.0.1"
                )
            except Exception as e:
                self.transport.write(f"error {type(e).__name__}\n".encode())
            else:
                self.transport.write(f"port {self.port.getHost().port} pid {os.getpid()}\n".encode())
        elif command == b"close" and self.port is not None:
            self.port.stopListening()
            self.transport.write(b"closed\n")


class RunTimeListenerFactory(Factory):
    protocol = RunTimeListener
