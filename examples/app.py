"""
Node's cluster "hello world", in Python: `python app.py [PORT] [WORKERS]`.

The primary forks WORKERS copies of this very script (4 by default); each
worker listens on tcp:PORT (8000 by default) through the primary, which
hands every connection to one of them in turn.
"""

import os
import sys

from twisted.internet import reactor
from twisted.web.resource import Resource
from twisted.web.server import Site

from twistcluster import cluster


class Hello(Resource):
    isLeaf = True

    def render_GET(self, request):
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return f"hello from worker {cluster.worker.id} (pid {os.getpid()})\n".encode()


def MyFactory():
    return Site(Hello())


port = sys.argv[1] if len(sys.argv) > 1 else "8000"
workers = int(sys.argv[2]) if len(sys.argv) > 2 else 4

if cluster.isPrimary:
    for _ in range(workers):
        cluster.fork()
    cluster.on(
        "listening",
        lambda worker, address: print(
            f"worker {worker.process.pid} listening on port {address.port}", flush=True
        ),
    )
    cluster.on("exit", lambda worker, code, signal: print(f"worker {worker.process.pid} died", flush=True))
else:
    cluster.listen(f"tcp:{port}", MyFactory())
reactor.run()
