"""
Endpoint descriptions and listen calls become the same L{ListenSpec}.
"""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from twistcluster._endpoints import ListenSpec, UnsupportedEndpoint, specFromDescription


class SpecFromDescriptionTests(SynchronousTestCase):
    def test_tcp(self) -> None:
        self.assertEqual(
            specFromDescription("tcp:8080:interface=127.0.0.1:backlog=7"),
            ListenSpec("tcp", "127.0.0.1", 8080, 7),
        )

    def test_tcp6(self) -> None:
        spec = specFromDescription("tcp6:8080:interface=\\:\\:1")
        self.assertEqual((spec.kind, spec.address, spec.port, spec.addressType), ("tcp", "::1", 8080, 6))

    def test_unixPathIsAbsolute(self) -> None:
        spec = specFromDescription("unix:app.sock:mode=600")
        self.assertEqual(spec, ListenSpec("unix", os.path.abspath("app.sock"), -1, 50, 0o600))
        self.assertEqual(spec.key(0), f"{os.path.abspath('app.sock')}:-1:-1:-1:0")

    def test_wrapperEndpoint(self) -> None:
        """
        Wrappers (here the PROXY protocol) listen through their inner
        endpoint.
        """
        self.assertEqual(specFromDescription("haproxy:tcp:9000"), ListenSpec.forTCP(9000))

    def test_malformed(self) -> None:
        self.assertRaises(ValueError, specFromDescription, "bogus:1")
        self.assertRaises(ValueError, specFromDescription, "tcp:notaport")

    def test_unsupported(self) -> None:
        """
        An endpoint that listens some other way (here by adopting a
        descriptor) is refused, saying so.
        """
        from twisted.internet.endpoints import AdoptedStreamServerEndpoint
        from twisted.internet.protocol import Factory

        from twistcluster._endpoints import _ListenRecorder

        endpoint = AdoptedStreamServerEndpoint(_ListenRecorder(), 99, 2)
        endpoint._setNonBlocking = lambda fd: None
        failure = self.failureResultOf(endpoint.listen(Factory()), UnsupportedEndpoint)
        self.assertIn("twistcluster does not route", str(failure.value))


class ListenSpecTests(SynchronousTestCase):
    def test_nodeKey(self) -> None:
        self.assertEqual(ListenSpec.forTCP(0, interface="127.0.0.1").key(2), "127.0.0.1:0:4:-1:2")

    def test_grantedIgnoresBacklog(self) -> None:
        configured = ListenSpec.forTCP(8080, backlog=50)
        self.assertTrue(ListenSpec.forTCP(8080, backlog=1000).grantedBy(configured))
        self.assertFalse(ListenSpec.forTCP(8081).grantedBy(configured))
        self.assertFalse(ListenSpec.forTCP(8080, interface="127.0.0.1").grantedBy(configured))

    def test_jsonRoundTrip(self) -> None:
        spec = ListenSpec.forUNIX("/run/app.sock", 10, 0o660)
        self.assertEqual(ListenSpec.fromJSON(spec.toJSON()), spec)
