"""
Listens a worker makes at run time (passive FTP's data port): made in the
worker itself, with their real port and Twisted's own errors, unless the
master was configured for them; a port bound for the workers' queries is
closed in the master once its last worker closes it.
"""

from __future__ import annotations

import ftplib
import signal
import time

import pytest

from tests._cluster import connect, listeningSockets, readLine, socketsHeldBy
from tests._primary import freePort
from twistcluster._common.endpoints import ListenSpec
from twistcluster._common.policies import SchedulingPolicy
from twistcluster._master.handles import Handles
from twistcluster._worker.routing import CommandLineListens, specsOf


def test_configured_listens_go_through_the_master():
    """
    The n-th listen on a configured address, for its n configurations; the
    others, and every other address, stay in the worker.
    """
    listens = CommandLineListens(specsOf(["tcp:0", "tcp:0", "tcp:8080:interface=127.0.0.1", "udp:53"]))
    any0 = ListenSpec.forTCP(0)
    assert [listens.throughMaster(any0, index) for index in range(3)] == [True, True, False]
    assert listens.throughMaster(ListenSpec.forTCP(8080, interface="127.0.0.1"), 0)
    assert not listens.throughMaster(ListenSpec.forTCP(8080), 0)
    assert not listens.throughMaster(ListenSpec.forTCP(0, interface="127.0.0.1"), 0)
    assert listens.throughMaster(ListenSpec.forUDP(53), 0)
    assert not listens.throughMaster(ListenSpec.forUDP(54), 0)


def test_plugin_listens_while_starting():
    """
    A plugin whose endpoints the master cannot tell: what it listens on while
    its service starts is its own; later listens stay in the worker.
    """
    listens = CommandLineListens(None)
    listens.starting = True
    assert listens.throughMaster(ListenSpec.forTCP(2121), 0)
    listens.starting = False
    assert not listens.throughMaster(ListenSpec.forTCP(0), 0)


class _Worker:
    def __init__(self, id: int) -> None:
        self.id = id


def test_on_demand_handle_closed_by_its_last_worker():
    """
    A socket the master bound for a query closes once every worker that
    listened on it has closed it; a configured one stays, and so does one
    whose worker died (its replacement listens again).
    """
    handles = Handles(None, None, SchedulingPolicy.NONE, closeUnused=True)
    spec = ListenSpec.forTCP(0, interface="127.0.0.1")
    handle = handles.query(spec, 0)
    port = handle.sockname["port"]
    one, two = _Worker(1), _Worker(2)
    assert handles.workerListening(one, handle.key) and handles.workerListening(two, handle.key)
    handles.workerClosed(one, handle.key)
    assert handles.get(handle.key) is handle and listeningSockets(port)
    handles.workerClosed(two, handle.key)
    assert handles.get(handle.key) is None
    assert not listeningSockets(port)

    again = handles.query(spec, 0)
    handles.workerListening(one, again.key)
    handles.workerGone(one)
    assert handles.get(again.key) is again
    again.closeNow()

    configured = Handles(None, [spec], SchedulingPolicy.NONE)
    kept = configured.listen(spec, 0)
    configured.workerListening(one, kept.key)
    configured.workerClosed(one, kept.key)
    assert configured.get(kept.key) is kept
    kept.closeNow()


def test_factory_run_time_listen_is_the_workers_own(cluster):
    """
    A FACTORY's protocol listening at run time: a real port, in that worker,
    not in the master; a port in use raises CannotListenError there, as in
    a single Twisted process.
    """
    c = cluster(
        "--workers",
        "2",
        "--listen",
        "tcp:0:interface=127.0.0.1",
        "tests.semanticsapps.RunTimeListenerFactory",
    )
    pids = c.waitReady(2)
    master = c.process.pid
    with connect(c.address()) as sock:
        sock.sendall(b"listen 0\n")
        answer = readLine(sock).split()
        assert answer[0] == "port" and int(answer[1]) > 0, answer
        port, pid = int(answer[1]), int(answer[3])
        assert pid in pids.values()
        assert listeningSockets(port) & socketsHeldBy(pid)
        assert not listeningSockets(port) & socketsHeldBy(master)
        with connect(c.address()) as other:
            other.sendall(f"listen {port}\n".encode())
            assert readLine(other) == "error CannotListenError\n"
        sock.sendall(b"close\n")
        assert readLine(sock) == "closed\n"
    assert not c.matches("not configured to listen")


@pytest.mark.parametrize("policy", ["rr", "none"])
def test_passive_ftp(cluster, tmp_path, policy):
    """
    twist ftp, clustered: passive transfers with a real FTP client (ftplib),
    each data port a real one in the worker that serves the session; TERM
    then stops the master at once.
    """
    (tmp_path / "file").write_bytes(b"hello ftp\n" * 1000)
    # ftp's own port is one the master binds on the first worker's query:
    # it logs no bound event, so the test picks the port.
    port = freePort()
    c = cluster("--workers", "2", "--scheduling", policy, "--", "ftp", "-p", str(port), "-r", str(tmp_path))
    pids = c.waitReady(2)
    master = c.process.pid
    served = set()
    for _ in range(6):
        with ftplib.FTP() as ftp:
            ftp.connect("127.0.0.1", port, timeout=15)
            ftp.login()
            ftp.set_pasv(True)
            ftp.voidcmd("TYPE I")
            with ftp.transfercmd("RETR file") as data:
                dataPort = data.getpeername()[1]
                assert dataPort > 0
                holders = {pid for pid in pids.values() if listeningSockets(dataPort) & socketsHeldBy(pid)}
                assert len(holders) == 1 and not listeningSockets(dataPort) & socketsHeldBy(master)
                received = b""
                while chunk := data.recv(65536):
                    received += chunk
            ftp.voidresp()
            assert received == b"hello ftp\n" * 1000
            served |= holders
    if policy == "rr":
        assert served == set(pids.values())
    started = time.monotonic()
    c.signal(signal.SIGTERM)
    assert c.wait() == 0
    assert time.monotonic() - started < 10
    assert c.leftovers() == []
