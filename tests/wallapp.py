"""
What a worker has loaded: a protocol that answers with the worker's id, as
cluster.worker knows it, and the twistcluster modules in its sys.modules.
`twist cluster ... tests.wallapp.Modules` runs it as FACTORY; `python
tests/wallapp.py` runs it as a script using cluster (the primary forks one
worker of the same script, which listens through it).
"""

import json
import sys

from twisted.internet.protocol import Factory, Protocol


class ModulesProtocol(Protocol):
    def connectionMade(self) -> None:
        from twistcluster import cluster

        answer = {
            "worker": cluster.worker.id,
            "modules": sorted(name for name in sys.modules if name.startswith("twistcluster")),
        }
        self.transport.write(json.dumps(answer).encode() + b"\n")
        self.transport.loseConnection()


class Modules(Factory):
    protocol = ModulesProtocol


if __name__ == "__main__":
    from twisted.internet import reactor

    from twistcluster import cluster

    if cluster.isPrimary:
        cluster.fork()
        cluster.on("listening", lambda worker, address: print(f"listening on {address.port}", flush=True))
    else:
        cluster.listen("tcp:0:interface=127.0.0.1", Modules())
    reactor.run()
