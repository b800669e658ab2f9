"""
An echo server: `twist cluster --listen tcp:8080 echo.EchoFactory` (from this directory).
"""

from twisted.internet.protocol import Factory, Protocol


class Echo(Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


class EchoFactory(Factory):
    protocol = Echo
