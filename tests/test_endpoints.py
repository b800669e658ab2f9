"""
Endpoint descriptions and listen calls become the same L{ListenSpec}.
"""

from __future__ import annotations

import os
import socket

from twisted.internet.endpoints import _SystemdParser
from twisted.python.systemd import ListenFDs
from twisted.trial.unittest import SynchronousTestCase

from tests._cluster import temporaryPath
from twistcluster._common.endpoints import (
    ListenSpec,
    UnsupportedEndpoint,
    needsTLS,
    parseDatagram,
    specFromDescription,
    workerDescription,
)


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
        self.assertEqual(spec, ListenSpec("unix", os.path.abspath("app.sock"), -1, 511, 0o600))
        self.assertEqual(spec.key(0), f"{os.path.abspath('app.sock')}:-1:-1:-1:0")

    def test_backlogIsNodesUnlessGiven(self) -> None:
        """
        Node's 511, where Twisted's endpoints would listen with 50; a
        C{backlog=} is honoured, 50 included.
        """
        self.assertEqual(specFromDescription("tcp:8080").backlog, 511)
        self.assertEqual(specFromDescription("unix:app.sock").backlog, 511)
        self.assertEqual(specFromDescription("tcp:8080:backlog=50").backlog, 50)
        self.assertEqual(specFromDescription("haproxy:tcp:8080:backlog=9").backlog, 9)

    def test_portOutOfRange(self) -> None:
        for description in ("tcp:70000", "tcp:-5", "tcp6:65536", "udp:65536", "udp:-1"):
            with self.assertRaises(ValueError) as raised:
                specFromDescription(description)
            self.assertIn("is out of range (0-65535)", str(raised.exception))
        self.assertEqual(specFromDescription("tcp:65535").port, 65535)

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
        An endpoint that listens some other way (here a client-only
        description used as a server) is refused, saying so.
        """
        self.assertRaises(ValueError, specFromDescription, "stdio:")


class NeedsTLSTests(SynchronousTestCase):
    """
    Which descriptions a master can parse without pyOpenSSL.
    """

    def test_plain(self) -> None:
        for description in (
            "tcp:8080",
            "tcp6:0:interface=\\:\\:1",
            "unix:/tmp/ssl.sock",
            "systemd:domain=INET:index=0",
            "udp:53",
            "haproxy:tcp:8080",
        ):
            self.assertFalse(needsTLS(description), description)

    def test_tls(self) -> None:
        for description in ("ssl:443:privateKey=key.pem", "haproxy:ssl:443", "haproxy"):
            self.assertTrue(needsTLS(description), description)

    def test_unknownAssumesTLS(self) -> None:
        """
        Another package's endpoint type (or a typo) might need TLS.
        """
        self.assertTrue(needsTLS("le:/srv/certs:tcp:443"))
        self.assertTrue(needsTLS("TCP:8080"))


class DatagramTests(SynchronousTestCase):
    def test_udp(self) -> None:
        self.assertEqual(specFromDescription("udp:9999"), ListenSpec("udp", "", 9999))
        self.assertEqual(
            parseDatagram("udp:0:interface=127.0.0.1:maxPacketSize=1500"),
            (ListenSpec("udp", "127.0.0.1", 0), 1500),
        )

    def test_udp6(self) -> None:
        spec, _ = parseDatagram("udp6:53")
        self.assertEqual((spec.address, spec.family, spec.key(0)), ("::", socket.AF_INET6, ":::53:udp6:-1:0"))
        self.assertEqual(parseDatagram("udp:53:interface=\\:\\:1")[0].address, "::1")

    def test_malformed(self) -> None:
        for description in ("udp:", "udp:x", "udp:1:2", "udp:1:colour=red", "udp6:1:interface=127.0.0.1"):
            self.assertRaises(ValueError, specFromDescription, description)


class InheritedSocketTests(SynchronousTestCase):
    """
    systemd: the master adopts a socket it inherited; parsing keeps it open
    under its own number.
    """

    def inherit(self, sock: socket.socket, name: str = "web") -> int:
        self.addCleanup(sock.close)
        self.patch(_SystemdParser, "_sddaemon", ListenFDs([sock.fileno()], (name,)))
        return sock.fileno()

    def test_adopted(self) -> None:
        sock = socket.create_server(("127.0.0.1", 0))
        fd = self.inherit(sock)
        spec = specFromDescription("systemd:domain=INET:name=web")
        self.assertEqual(spec, ListenSpec("tcp", "127.0.0.1", sock.getsockname()[1], fd=fd))
        self.assertEqual(spec.key(0), f"127.0.0.1:{spec.port}:4:{fd}:0")
        # The endpoint closed the descriptor; the same socket is back under it.
        with socket.socket(fileno=os.dup(fd)) as again:
            self.assertEqual(again.getsockname(), sock.getsockname())

    def test_unix(self) -> None:
        path = temporaryPath(self)
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(path)
        sock.listen()
        self.inherit(sock)
        spec = specFromDescription("systemd:domain=UNIX:index=0")
        self.assertEqual((spec.kind, spec.address), ("unix", os.path.abspath(path)))

    def test_notListening(self) -> None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.inherit(sock)
        error = self.assertRaises(UnsupportedEndpoint, specFromDescription, "systemd:domain=INET:index=0")
        self.assertIn("is not listening", str(error))

    def test_wrongFamily(self) -> None:
        self.inherit(socket.create_server(("127.0.0.1", 0)))
        error = self.assertRaises(UnsupportedEndpoint, specFromDescription, "systemd:domain=INET6:index=0")
        self.assertIn("is not a AF_INET6 stream socket", str(error))

    def test_workerDescription(self) -> None:
        """
        Workers cannot find the master's inherited socket: they listen on its
        address, wrappers and all, and the master grants that address its
        inherited socket.
        """
        tcp = ListenSpec("tcp", "127.0.0.1", 8080, fd=3)
        self.assertEqual(
            workerDescription("systemd:domain=INET:index=0", tcp), "tcp:8080:interface=127.0.0.1"
        )
        self.assertEqual(
            workerDescription("haproxy:systemd:domain=INET:name=web", tcp),
            "haproxy:tcp:8080:interface=127.0.0.1",
        )
        tcp6 = ListenSpec("tcp", "::", 8080, fd=4)
        self.assertEqual(
            workerDescription("systemd:domain=INET6:index=1", tcp6), "tcp6:8080:interface=\\:\\:"
        )
        unix = ListenSpec("unix", "/run/a:b.sock", fd=3)
        self.assertEqual(workerDescription("systemd:domain=UNIX:index=0", unix), "unix:/run/a\\:b.sock")
        self.assertEqual(
            specFromDescription(workerDescription("haproxy:systemd:domain=INET:index=0", tcp)),
            ListenSpec.forTCP(8080, interface="127.0.0.1"),
        )
        self.assertEqual(workerDescription("tcp:8080", ListenSpec.forTCP(8080)), "tcp:8080")


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
