"""
A twisted.web site that says hello and which worker served it:
`twist cluster --listen tcp:8080 hello.site` (from this directory).
"""

import os

from twisted.web.resource import Resource
from twisted.web.server import Site


class Hello(Resource):
    isLeaf = True

    def render_GET(self, request):
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        worker = os.environ.get("TWISTCLUSTER_WORKER_ID", "?")
        return f"hello from worker {worker} (pid {os.getpid()})\n".encode()


site = Site(Hello())
