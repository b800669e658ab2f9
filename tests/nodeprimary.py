"""
Node's cluster tests whose primary must be a process of its own (it dies, or
it must not be root): `python nodeprimary.py SCENARIO`.  As in Node, the same
script is the primary and its workers.  The primary prints one line per fact:
`pids A B`, `error ERRNO`, `exit CODE`.
"""

import errno
import os
import sys

from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol

from twistcluster import cluster

scenario = sys.argv[1]


def say(*words):
    print(*words, flush=True)


if cluster.isPrimary:
    if scenario == "privileged":
        # Node: test-cluster-bind-privileged-port (and, with
        # TWISTCLUSTER_SCHED_POLICY=none, -shared-handle-bind-privileged-port)
        worker = cluster.fork()
        worker.on("message", lambda message: say("error", message["error"]))
        worker.on("exit", lambda code, signal: (say("exit", code), reactor.stop()))
    elif scenario == "primaryError":
        # Node: test-cluster-primary-error: the primary throws once its
        # workers run (here: before its reactor ever runs).
        workers = [cluster.fork() for _ in range(2)]
        say("pids", *[w.process.pid for w in workers])
        raise RuntimeError("the primary fails")
    elif scenario == "primaryKill":
        # Node: test-cluster-primary-kill: the primary exits while its
        # workers listen.
        workers = [cluster.fork() for _ in range(2)]
        listening = []

        def listened(worker, address):
            listening.append(worker)
            if len(listening) == len(workers):
                say("pids", *[w.process.pid for w in workers])
                os._exit(0)

        cluster.on("listening", listened)
else:
    if scenario == "privileged":

        def refused(failure):
            cluster.worker.send({"error": errno.errorcode[failure.value.socketError.errno]})
            cluster.worker.disconnect()

        cluster.listen("tcp:42:interface=127.0.0.1", Factory.forProtocol(Protocol)).addCallbacks(
            lambda port: cluster.worker.send({"error": None}), refused
        )
    else:
        cluster.listen("tcp:0:interface=127.0.0.1", Factory.forProtocol(Protocol))
reactor.run()
