"""
A twisted.web site as FACTORY: building it installs the reactor, in the
master too (tests.test_endpoint_kinds).
"""

from twisted.web.resource import Resource
from twisted.web.server import Site


class Hello(Resource):
    isLeaf = True

    def render_GET(self, request):
        return b"hello\n"


site = Site(Hello())
