"""
The worker side of the ports of Node's cluster tests (tests/test_node_ports.py):
the primary (the test process) forks `python nodeworker.py SCENARIO [ARGS]`,
and the worker tells it what it saw with messages (or with its exit code, once
the channel is gone, as Node's tests do).
"""

import errno
import os
import sys

from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.logger import globalLogBeginner, textFileLogObserver

from twistcluster import cluster

globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)], redirectStandardIO=False)


class Echo(Protocol):
    def dataReceived(self, data):
        self.transport.write(data)


def echo():
    return Factory.forProtocol(Echo)


def report(**fields):
    cluster.worker.send(fields)


def errnoOf(failure):
    return errno.errorcode.get(getattr(failure.value.socketError, "errno", None), repr(failure.value))


def listen(description="tcp:0:interface=127.0.0.1", then=None):
    def listening(port):
        report(event="listening", port=port.getHost().port)
        if then is not None:
            then(port)

    cluster.listen(description, echo()).addCallbacks(
        listening, lambda f: report(event="error", error=errnoOf(f))
    )


def exitNow(code):
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def scenario_listen(*descriptions):
    for description in descriptions or ["tcp:0:interface=127.0.0.1"]:
        listen(description)


def scenario_exit(code):
    assert cluster.isWorker  # connects, as any use of cluster does
    exitNow(int(code))


def scenario_listenThenExit(code):
    listen(then=lambda port: exitNow(int(code)))


def scenario_exitOnDisconnect(code):
    cluster.worker.on("disconnect", lambda: exitNow(int(code)))
    listen()


def scenario_leave(how):
    def leave(port):
        getattr(cluster.worker, how)()

    listen(then=leave)


def scenario_disconnectRace():
    seen = []
    cluster.worker.on("disconnect", lambda: seen.append("disconnect"))

    def leave(port):
        cluster.worker.disconnect()
        report(event="sameTick", seen=list(seen), state=cluster.worker.state)

    listen(then=leave)


def scenario_listenOrLeave(description):
    """Listen; if refused, say why and leave."""

    def refused(failure):
        report(event="error", error=errnoOf(failure))
        cluster.worker.disconnect()

    cluster.listen(description, echo()).addCallbacks(
        lambda port: report(event="listening", port=port.getHost().port), refused
    )


def scenario_retryListen(port):
    description = f"tcp:{port}:interface=127.0.0.1"
    cluster.worker.on("message", lambda message: listen(description))
    listen(description)


def scenario_listenTwice(port):
    description = f"tcp:{port}:interface=127.0.0.1"

    def second(first):
        def refused(failure):
            report(event="second", error=errnoOf(failure))
            first.stopListening()
            cluster.worker.disconnect()

        cluster.listen(description, echo()).addCallbacks(
            lambda port: report(event="second", error=None), refused
        )

    cluster.listen(description, echo()).addCallback(second)


def scenario_relisten(rounds="2"):
    """listen(0) -> close -> listen(0) -> close, `rounds` times, then leave."""
    left = [int(rounds) * 2]

    def next(_=None):
        if not left[0]:
            cluster.worker.disconnect()
            return
        left[0] -= 1
        cluster.listen("tcp:0:interface=127.0.0.1", echo()).addCallback(listened)

    def listened(port):
        report(event="listening", port=port.getHost().port)
        port.stopListening().addCallback(next)

    next()


def scenario_exclusive():
    cluster.listen("tcp:0:interface=127.0.0.1", echo(), exclusive=True).addCallback(
        lambda port: report(event="listening", port=port.getHost().port)
    )


def scenario_sharedAndExclusive():
    exclusivePort = os.environ["EXCLUSIVE_PORT"]

    def second(port):
        report(event="listening", port=port.getHost().port)
        cluster.listen(f"tcp:{exclusivePort}:interface=127.0.0.1", echo(), exclusive=True).addCallbacks(
            lambda p: report(event="exclusive", port=p.getHost().port, error=None),
            lambda f: report(event="exclusive", error=errno.errorcode[f.value.socketError.errno]),
        )

    cluster.listen("tcp:0:interface=127.0.0.1", echo()).addCallback(second)


class Limited(Factory):
    """At most `limit` connections (Node's server.maxConnections)."""

    protocol = Echo

    def __init__(self, limit):
        self.limit = limit
        self.served = 0

    def buildProtocol(self, addr):
        if self.served >= self.limit:
            return None
        self.served += 1
        return Factory.buildProtocol(self, addr)


def scenario_maxConnections(path, limit):
    factory = Limited(int(limit))
    cluster.worker.on("message", lambda message: report(event="served", served=factory.served))
    cluster.listen(f"unix:{path}", factory).addCallback(lambda port: report(event="listening", port=-1))


def scenario_messages():
    worker = cluster.worker
    onProcess = []
    worker.process.on("message", onProcess.append)

    def received(message):
        worker.send({"echo": message, "onProcess": message in onProcess})

    worker.on("message", received)
    report(event="hello", sent=worker.process.send({"event": "viaProcess"}))


def scenario_chatter():
    """Messages both ways while the primary disconnects this worker."""
    cluster.worker.on("message", lambda message: cluster.worker.send({"event": "pong", "n": message["n"]}))
    for n in range(50):
        report(event="chat", n=n)
    listen()


def scenario_twistedListens():
    """Ordinary Twisted listens, through the primary."""
    ports = []

    def got(port):
        ports.append(port.getHost().port)
        if len(ports) == 3:
            report(event="ports", ports=ports)

    reactor.listenTCP(0, echo(), interface="127.0.0.1").whenListening().addCallback(got)
    reactor.listenTCP(0, echo(), interface="127.0.0.1").whenListening().addCallback(got)
    serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(echo()).addCallback(
        lambda port: port.whenListening()
    ).addCallback(got)


def scenario_backlog():
    reactor.listenTCP(0, echo(), backlog=127, interface="127.0.0.1")


class Datagrams(DatagramProtocol):
    def datagramReceived(self, data, address):
        report(event="datagram", data=data.decode())


def scenario_udp():
    port = reactor.listenUDP(0, Datagrams(), interface="127.0.0.1")
    port.whenListening().addCallbacks(
        lambda p: report(event="listening", port=p.getHost().port),
        lambda f: report(event="error", error=str(f.value)),
    )


def scenario_describe():
    report(
        event="describe",
        argv=sys.argv,
        cwd=os.getcwd(),
        uid=os.getuid(),
        env={k: v for k, v in os.environ.items() if k.startswith("NODEPORT_")},
        workerId=cluster.worker.id,
        variable=os.environ.get("TWISTCLUSTER_WORKER_ID"),
    )


def scenario_listenMany(count):
    """
    Listen through the primary COUNT times on port 0 (each a new index, so
    each a new socket in Node's semantics): how many were granted.
    """
    outcomes = []

    def done(_):
        refused = [o for o in outcomes if o is not True]
        report(
            event="listenedMany",
            granted=outcomes.count(True),
            refused=len(refused),
            error=refused[0] if refused else None,
        )

    listens = [
        cluster.listen("tcp:0:interface=127.0.0.1", echo()).addCallbacks(
            lambda port: outcomes.append(True), lambda f: outcomes.append(str(f.value))
        )
        for _ in range(int(count))
    ]
    gatherResults(listens).addCallback(done)


def scenario_sendBig(size):
    """
    Send the primary a message of SIZE bytes, then a small one: what became
    of each.
    """
    outcomes = {}

    def sent(error, which):
        outcomes[which] = None if error is None else f"{type(error).__name__}: {error}"
        if len(outcomes) == 2:
            report(event="sentBig", **outcomes)

    cluster.worker.send({"payload": "x" * int(size)}, lambda error: sent(error, "big"))
    cluster.worker.send({"event": "small"}, lambda error: sent(error, "small"))


if __name__ == "__main__":
    globals()["scenario_" + sys.argv[1]](*sys.argv[2:])
    reactor.run()
