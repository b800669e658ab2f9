"""
Every kind of endpoint a master can serve, with real processes and
clients: IPv6, TLS, UDP, systemd socket activation, the PROXY protocol
wrapper, port 0 and several endpoints at once.
"""

from __future__ import annotations

import collections
import fcntl
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from tests._cluster import connect, readLine, stopped, whoServes
from tests._tls import selfSignedCertificate

APP = "tests.clusterapps.WhoAmIFactory"


def _hasIPv6Loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _hasIPv6Loopback(), reason="no IPv6 loopback on this machine")
def test_tcp6(cluster):
    """
    tcp6: listens on IPv6; its bound address is logged as tcp6:[HOST]:PORT.
    """
    c = cluster("--workers", "2", "--listen", "tcp6:0:interface=\\:\\:1", APP)
    c.waitReady(2)
    [(description, bound, _)] = c.bound()
    assert re.fullmatch(r"tcp6:\[::1\]:\d+", bound), bound
    address = c.address(description)
    assert address[0] == "::1"
    assert {whoServes(address)[0] for _ in range(4)} == {1, 2}


@pytest.mark.parametrize("policy", ["rr", "none"])
def test_ssl(cluster, tmp_path, policy):
    """
    ssl: the master passes plain TCP sockets (or the listening socket) and
    each worker runs TLS with the endpoint's key and certificate.
    """
    key, certificate = selfSignedCertificate(tmp_path)
    c = cluster(
        "--workers",
        "2",
        "--scheduling",
        policy,
        "--listen",
        f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={certificate}",
        APP,
    )
    pids = c.waitReady(2)
    address = c.address()
    context = ssl.create_default_context(cafile=certificate)

    def greeting() -> str:
        with context.wrap_socket(connect(address), server_hostname="127.0.0.1") as tls:
            line = readLine(tls)
            tls.sendall(b"over TLS\n")
            assert readLine(tls) == "over TLS\n"
            return line

    if policy == "rr":
        assert {greeting().split()[0] for _ in range(4)} == {"worker=1", "worker=2"}
    else:
        for worker, pid in pids.items():
            with stopped(next(p for p in pids.values() if p != pid)):
                assert greeting().startswith(f"worker={worker} ")
    with pytest.raises(ssl.SSLError):
        # A client that does not trust the certificate is refused: TLS it is.
        with ssl.create_default_context().wrap_socket(connect(address), server_hostname="127.0.0.1"):
            pass


def _loadsCryptography(pid: int) -> bool:
    """
    Has process C{pid} loaded pyOpenSSL's backend (cryptography's Rust
    extension, mapped from its package directory)?
    """
    return f"{os.sep}cryptography{os.sep}" in Path(f"/proc/{pid}/maps").read_text()


def test_plain_master_leaves_out_tls(cluster):
    """
    A master whose listens are all plain never loads pyOpenSSL (13 MiB it
    would never use); its workers still have it.
    """
    c = cluster("--workers", "1", "--listen", "haproxy:tcp:0:interface=127.0.0.1", APP)
    [worker] = c.waitReady(1).values()
    assert not _loadsCryptography(c.process.pid)
    assert _loadsCryptography(worker)


def test_web_site_master_leaves_out_tls(cluster):
    """
    A twisted.web Site installs the reactor as it is built, in the master
    too: without pyOpenSSL there, and serving.
    """
    c = cluster("--workers", "1", "--listen", "tcp:0:interface=127.0.0.1", "tests.webapp.site")
    c.waitReady(1)
    assert not _loadsCryptography(c.process.pid)
    with connect(c.address()) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        response = b""
        while chunk := sock.recv(4096):
            response += chunk
    assert response.startswith(b"HTTP/1.0 200 OK") and response.endswith(b"\r\n\r\nhello\n")


def test_factory_importing_tls(cluster):
    """
    A FACTORY whose module imports pyOpenSSL cannot load with it left out:
    the master starts again as the same process, keeping it, and serves.
    """
    c = cluster("--workers", "1", "--listen", "tcp:0:interface=127.0.0.1", "tests.tlsapp.WhoAmIFactory")
    c.waitReady(1)
    assert _loadsCryptography(c.process.pid)
    assert whoServes(c.address())[0] == 1


def test_udp(cluster):
    """
    udp: every worker reads from the one socket; each datagram reaches
    exactly one worker.
    """
    c = cluster("--workers", "2", "--listen", "udp:0:interface=127.0.0.1", "tests.clusterapps.WhoAmIDatagram")
    pids = c.waitReady(2)
    [(_, bound, scheduling)] = c.bound()
    assert re.fullmatch(r"udp:127\.0\.0\.1:\d+", bound) and scheduling == "none"
    address = c.address()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(10)
        for i in range(40):
            client.sendto(b"datagram %d" % i, address)
        answers = [client.recv(1000).decode() for _ in range(40)]
        for worker, pid in pids.items():
            with stopped(next(p for p in pids.values() if p != pid)):
                client.sendto(b"only %d" % worker, address)
                assert client.recv(1000).decode() == f"worker={worker} pid={pid} only {worker}"
    answered = collections.Counter(a.split(" ", 2)[2] for a in answers)
    assert answered == {f"datagram {i}": 1 for i in range(40)}
    assert all(
        re.match(r"worker=(\d) pid=(\d+) ", a).groups() in {(str(w), str(p)) for w, p in pids.items()}
        for a in answers
    )
    c.signal(signal.SIGTERM)
    assert c.wait() == 0


@pytest.fixture
def activated():
    """
    Start a master as systemd would, with the given sockets inherited.
    """
    high: list[int] = []

    def arguments(*sockets: socket.socket, names: str) -> dict:
        # Above anything the targets (3, 4, ...) could clobber.
        fds = [fcntl.fcntl(s.fileno(), fcntl.F_DUPFD, 100) for s in sockets]
        high.extend(fds)
        return {
            "launcher": [sys.executable, str(Path(__file__).parent / "_activate.py"), *map(str, fds), "--"],
            "passFDs": fds,
            "env": {"LISTEN_FDNAMES": names},
        }

    yield arguments
    for fd in high:
        os.close(fd)


@pytest.mark.parametrize("policy", ["rr", "none"])
def test_systemd(cluster, activated, policy):
    """
    systemd: the master adopts the inherited sockets (workers cannot: they
    are the master's), every worker serves them, wrapped or not, and they
    still listen once the master has stopped: nobody shut them down.
    """
    plain, proxied = socket.create_server(("127.0.0.1", 0)), socket.create_server(("127.0.0.1", 0))
    with plain, proxied:
        ports = [plain.getsockname()[1], proxied.getsockname()[1]]
        c = cluster(
            "--workers",
            "2",
            "--scheduling",
            policy,
            "--listen",
            "systemd:domain=INET:index=0",
            "--listen",
            "haproxy:systemd:domain=INET:name=proxied",
            "tests.clusterapps.PeerAndWhoAmIFactory",
            **activated(plain, proxied, names="web:proxied"),
        )
        pids = c.waitReady(2)
        assert c.bound() == [
            ("systemd:domain=INET:index=0", f"tcp:127.0.0.1:{ports[0]}", policy),
            ("haproxy:systemd:domain=INET:name=proxied", f"tcp:127.0.0.1:{ports[1]}", policy),
        ]
        for worker, pid in pids.items():
            if policy == "rr":
                greetings = [_greeting(ports) for _ in range(2)]
            else:
                with stopped(next(p for p in pids.values() if p != pid)):
                    greetings = [_greeting(ports)]
            assert any(g[0].startswith(f"worker={worker} ") for g in greetings)
            assert all(g[1].startswith("worker=") for g in greetings)
            assert all(g[2] == "peer=203.0.113.7:4000 hello\n" for g in greetings), greetings
        c.signal(signal.SIGTERM)
        assert c.wait() == 0
        assert c.leftovers() == []
        for holder, port in [(plain, ports[0]), (proxied, ports[1])]:
            with socket.create_connection(("127.0.0.1", port), timeout=10):
                holder.settimeout(10)
                holder.accept()[0].close()


def _greeting(ports: list[int]) -> tuple[str, str, str]:
    """
    The greeting from each inherited socket, and the echo through the
    second, behind a PROXY header.
    """
    with connect(("127.0.0.1", ports[0])) as sock:
        plain = readLine(sock)
    with connect(("127.0.0.1", ports[1])) as sock:
        proxied = readLine(sock)
        sock.sendall(b"PROXY TCP4 203.0.113.7 192.0.2.1 4000 443\r\nhello\n")
        return plain, proxied, readLine(sock)


def test_haproxy_keeps_the_client_address(cluster):
    """
    haproxy:tcp: the worker parses the PROXY header; the protocol sees the
    client's address from it.
    """
    c = cluster(
        "--workers",
        "2",
        "--listen",
        "haproxy:tcp:0:interface=127.0.0.1",
        "tests.clusterapps.PeerAndWhoAmIFactory",
    )
    c.waitReady(2)
    address = c.address()
    served = set()
    for i in range(4):
        with connect(address) as sock:
            served.add(readLine(sock).split()[0])
            sock.sendall(b"PROXY TCP4 203.0.113.7 192.0.2.1 %d 443\r\nhello\n" % (40000 + i))
            assert readLine(sock) == f"peer=203.0.113.7:{40000 + i} hello\n"
    assert served == {"worker=1", "worker=2"}


def test_port_zero_and_several_listens(cluster, tmp_path):
    """
    Two tcp:0 listens get two kernel-chosen ports, each shared by every
    worker; every worker serves every endpoint; the master logs one
    parseable line per endpoint.
    """
    path = str(tmp_path / "app.sock")
    c = cluster(
        "--workers",
        "2",
        "--listen",
        "tcp:0:interface=127.0.0.1",
        "--listen",
        "tcp:0:interface=127.0.0.1",
        "--listen",
        f"unix:{path}",
        APP,
    )
    c.waitReady(2)
    bound = c.bound()
    assert [d for d, _, _ in bound] == ["tcp:0:interface=127.0.0.1"] * 2 + [f"unix:{path}"]
    ports = [int(re.fullmatch(r"tcp:127\.0\.0\.1:(\d+)", b).group(1)) for _, b, _ in bound[:2]]
    assert ports[0] != ports[1]
    assert bound[2][1] == f"unix:{path}"
    for endpoint in [("127.0.0.1", ports[0]), ("127.0.0.1", ports[1]), path]:
        assert {whoServes(endpoint)[0] for _ in range(4)} == {1, 2}


def _backlogs(port: int) -> list[int]:
    """
    The backlog of every listening TCP socket on C{port} (ss's Send-Q).
    """
    out = subprocess.run(
        ["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True, timeout=10
    ).stdout
    return [int(line.split()[2]) for line in out.splitlines() if line.strip()]


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2)")
@pytest.mark.parametrize("policy", ["rr", "none", "reuseport"])
def test_backlog_is_nodes_unless_given(cluster, policy):
    """
    A listening socket's backlog is Node's 511 unless the endpoint gives
    C{backlog=} (Twisted's endpoints would use 50).
    """
    c = cluster(
        "--workers",
        "2",
        "--scheduling",
        policy,
        "--listen",
        "tcp:0:interface=127.0.0.1",
        "--listen",
        "tcp:0:interface=127.0.0.1:backlog=7",
        APP,
    )
    c.waitReady(2)
    bound = c.bound()
    ports = [int(address.rsplit(":", 1)[1]) for _, address, _ in bound]
    sockets = 2 if policy == "reuseport" else 1
    assert _backlogs(ports[0]) == [511] * sockets
    assert _backlogs(ports[1]) == [7] * sockets
