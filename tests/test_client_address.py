"""
The client's real address behind a balancer: C{haproxy:} listens, PROXY
protocol headers made by hand, under every scheduling policy, seen by a
twisted.web site (C{request.getClientAddress()}) and by a plain protocol
(C{transport.getPeer()}).  The same through a real HAProxy is in
tests.test_haproxy.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import struct

import pytest

from tests._cluster import connect

PROXIED = "haproxy:tcp:0:interface=127.0.0.1"
SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def proxyV2(source: str, port: int, destinationPort: int = 443) -> bytes:
    """
    A PROXY protocol v2 header (PROXY command, TCP over IPv4 or IPv6), as
    HAProxy's send-proxy-v2 sends it.
    """
    src = ipaddress.ip_address(source)
    dst = ipaddress.ip_address("192.0.2.1" if src.version == 4 else "2001:db8::1")
    family = 0x11 if src.version == 4 else 0x21
    addresses = src.packed + dst.packed + struct.pack("!HH", port, destinationPort)
    return SIGNATURE + bytes([0x21, family]) + struct.pack("!H", len(addresses)) + addresses


def proxyV1(source: str, port: int) -> bytes:
    kind = "TCP4" if ipaddress.ip_address(source).version == 4 else "TCP6"
    destination = "192.0.2.1" if kind == "TCP4" else "2001:db8::1"
    return f"PROXY {kind} {source} {destination} {port} 443\r\n".encode()


def ask(address, header: bytes, request: bytes) -> bytes:
    with connect(address) as sock:
        sock.sendall(header + request)
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    return answer


CLIENTS = [("203.0.113.7", 40000), ("2001:db8::7", 40001), ("198.51.100.9", 65535)]
APPS = {
    "tests.hostapps.site": b"GET / HTTP/1.0\r\n\r\n",
    "tests.hostapps.plain": b"hello\n",
}


@pytest.mark.parametrize("policy", ["rr", "least-conn", "none", "reuseport"])
@pytest.mark.parametrize("app", sorted(APPS))
def test_every_policy(cluster, policy, app):
    """
    PROXY v1 and v2 headers, IPv4 and IPv6 clients: every answer names the
    client from the header, whichever worker serves it.
    """
    c = cluster("--workers", "2", "--scheduling", policy, "--listen", PROXIED, app, env={"TEST_HOST": "h"})
    c.waitReady(2)
    address = c.address()
    workers = set()
    for round in range(2):
        for make in (proxyV2, proxyV1):
            for host, port in CLIENTS:
                answer = ask(address, make(host, port - round), APPS[app])
                match = re.search(rb"host=h worker=(\d) client=(\S+)\n\Z", answer)
                assert match, answer
                # (Twisted's v2 parser writes IPv6 addresses out in full.)
                seenHost, seenPort = match.group(2).decode().rsplit(":", 1)
                assert (ipaddress.ip_address(seenHost), int(seenPort)) == (
                    ipaddress.ip_address(host),
                    port - round,
                )
                workers.add(match.group(1))
    if policy in ("rr", "least-conn"):
        assert workers == {b"1", b"2"}


@pytest.mark.parametrize("app", sorted(APPS))
def test_no_header_refused(cluster, app):
    """
    A connection without a PROXY header (or with a broken one) is closed
    before the application answers anything; each worker logs the first
    one, once, without a traceback, and serves proxied clients as before.
    """
    c = cluster("--workers", "1", "--listen", PROXIED, app, env={"TEST_HOST": "h"})
    c.waitReady(1)
    address = c.address()
    for header in (b"", b"PROXY TCP4 nonsense\r\n", SIGNATURE + b"\x99\x11\x00\x0c" + bytes(12)) * 5:
        answer = ask(address, header, APPS[app])
        assert b"host=" not in answer
    assert ask(address, proxyV2("203.0.113.7", 4000), APPS[app]).endswith(b"client=203.0.113.7:4000\n")
    c.waitFor(r"\[worker 1\] refused a connection from 127\.0\.0\.1:\d+ on a haproxy: listen")
    with socket.create_connection(address) as sock:
        sock.sendall(b"x" * 20)
        sock.recv(100)
    lines = c.matches(r"refused a connection from")
    assert len(lines) == 1
    assert "Traceback" not in c.output
