"""
`twist cluster` as users run it: real master and worker processes, real
sockets, real signals.
"""

from __future__ import annotations

import collections
import os
import select
import signal
import time

from tests._cluster import connect, readLine, waitUntil, whoServes

APP = "tests.clusterapps.WhoAmIFactory"


def test_serves_on_every_worker_in_turn(cluster):
    """
    N workers behind one port; sequential connections go round-robin, each
    served by a worker process the master spawned, whose id is in its
    environment.
    """
    c = cluster("--workers", "3", "--listen", "tcp:0:interface=127.0.0.1", APP)
    pids = c.waitReady(3)
    address = c.address()
    served = [whoServes(address) for _ in range(12)]
    assert {pid for _, pid in served} == set(pids.values())
    assert all(pids[worker] == pid for worker, pid in served)
    counts = collections.Counter(worker for worker, _ in served)
    assert sorted(counts.values()) == [4, 4, 4], counts


def test_factory_forms_and_echo(cluster):
    """
    FACTORY may be an instance, a class or a zero-argument callable; the
    connection is a real, two-way one.
    """
    for name in ("whoAmI", "WhoAmIFactory", "makeWhoAmI"):
        c = cluster("--workers", "1", "--listen", "tcp:0:interface=127.0.0.1", f"tests.clusterapps.{name}")
        c.waitReady(1)
        with connect(c.address()) as sock:
            assert readLine(sock).startswith("worker=1 ")
            sock.sendall(b"ping\n")
            assert readLine(sock) == "ping\n"
        c.signal(signal.SIGTERM)
        assert c.wait() == 0


def test_examples_from_the_readme(cluster):
    """
    The README's two examples run as written, from examples/.
    """
    examples = os.path.join(os.path.dirname(__file__), "..", "examples")
    echo = cluster(
        "--workers", "2", "--listen", "tcp:0:interface=127.0.0.1", "echo.EchoFactory", cwd=examples
    )
    echo.waitReady(2)
    with connect(echo.address()) as sock:
        sock.sendall(b"hello\n")
        assert readLine(sock) == "hello\n"
    hello = cluster("--workers", "2", "--listen", "tcp:0:interface=127.0.0.1", "hello.site", cwd=examples)
    hello.waitReady(2)
    host, port = hello.address()
    import http.client

    bodies = []
    for _ in range(4):
        conn = http.client.HTTPConnection(host, port, timeout=10)
        conn.request("GET", "/")
        response = conn.getresponse()
        assert response.status == 200
        bodies.append(response.read().decode())
        conn.close()
    assert {b.split()[3] for b in bodies} == {"1", "2"}, bodies


def test_output_relayed_and_factory_started_and_stopped(cluster):
    """
    Workers' stdout and stderr reach the master's log with the worker id;
    the factory's doStart runs in each worker and doStop on a graceful stop.
    """
    c = cluster("--workers", "2", "--listen", "tcp:0:interface=127.0.0.1", "tests.clusterapps.Chatty")
    c.waitReady(2)
    c.waitFor(r"\[worker 1\] factory started in worker 1")
    c.waitFor(r"\[worker 2\] factory started in worker 2")
    c.waitFor(r"\[worker 1\] stderr line from worker 1")
    c.signal(signal.SIGTERM)
    assert c.wait() == 0
    assert c.matches(r"\[worker 1\] factory stopped in worker 1")
    assert c.matches(r"\[worker 2\] factory stopped in worker 2")


def test_sigterm_lets_open_connections_finish(cluster):
    """
    TERM: the master stops accepting, workers finish their open connections,
    and the master exits 0 once they have.
    """
    c = cluster("--workers", "2", "--listen", "tcp:0:interface=127.0.0.1", APP)
    c.waitReady(2)
    address = c.address()
    sock = connect(address)
    assert readLine(sock).startswith("worker=")
    c.signal(signal.SIGTERM)
    c.waitFor(r"no longer accepting")
    c.waitFor(r"closing; 1 connections open")
    # The open connection is still served...
    sock.sendall(b"still there?\n")
    assert readLine(sock) == "still there?\n"
    # ...new ones are not accepted...
    waitUntil(lambda: _refused(address), 10, "the port to close")
    # ...and the master exits once the last connection ends.
    assert c.process.poll() is None
    sock.close()
    assert c.wait() == 0
    assert c.leftovers() == []


def _refused(address: tuple[str, int]) -> bool:
    try:
        connect(address, timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def test_sigint_stops_gracefully(cluster):
    """
    INT (Ctrl-C, which reaches the whole process group) is a graceful stop,
    with exit status 0.
    """
    c = cluster("--workers", "2", "--listen", "tcp:0:interface=127.0.0.1", APP)
    c.waitReady(2)
    os.killpg(c.process.pid, signal.SIGINT)
    assert c.wait() == 0
    assert c.matches(r"SIGINT: stopping gracefully")
    assert c.leftovers() == []


def test_shutdown_timeout_kills_workers_that_do_not_finish(cluster):
    """
    A connection that never ends does not keep the master alive past
    --shutdown-timeout.
    """
    c = cluster("--workers", "1", "--shutdown-timeout", "1", "--listen", "tcp:0:interface=127.0.0.1", APP)
    c.waitReady(1)
    with connect(c.address()) as sock:
        readLine(sock)
        started = time.monotonic()
        c.signal(signal.SIGTERM)
        assert c.wait(timeout=15) == 0
        assert time.monotonic() - started < 10
    assert c.matches(r"still running 1.0s after it was asked to stop; killing it")
    assert c.leftovers() == []


def test_killed_master_leaves_no_workers(cluster):
    """
    SIGKILL to the master: its workers see the control channel close and
    exit; nothing is left running.
    """
    c = cluster("--workers", "2", "--listen", "tcp:0:interface=127.0.0.1", APP)
    c.waitReady(2)
    c.process.kill()
    c.process.wait(10)
    waitUntil(lambda: not c.leftovers(), 10, "the workers to exit")


def test_crashed_worker_is_replaced(cluster):
    """
    A worker that dies unexpectedly is replaced by a new one (a new id);
    the cluster keeps serving.
    """
    c = cluster("--workers", "2", "--listen", "tcp:0:interface=127.0.0.1", APP)
    pids = c.waitReady(2)
    os.kill(pids[1], signal.SIGKILL)
    c.waitFor(r"worker 1 \(pid \d+\) exited with signal 9")
    pids = c.waitReady(3)
    assert 3 in pids
    address = c.address()
    served = {whoServes(address)[0] for _ in range(4)}
    assert served == {2, 3}


def _environment(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as f:
        pairs = [entry.split(b"=", 1) for entry in f.read().split(b"\0") if b"=" in entry]
    return {k.decode(): v.decode() for k, v in pairs}


def test_replacement_keeps_the_slot(cluster):
    """
    Each worker has a slot, 0..N-1 (TWISTCLUSTER_WORKER_SLOT), which its
    replacement takes over, with a new id (TWISTCLUSTER_WORKER_ID).
    """
    c = cluster("--workers", "2", "--listen", "tcp:0:interface=127.0.0.1", APP)
    pids = c.waitReady(2)
    slots = {id: _environment(pid)["TWISTCLUSTER_WORKER_SLOT"] for id, pid in pids.items()}
    assert sorted(slots.values()) == ["0", "1"]
    os.kill(pids[2], signal.SIGKILL)
    pids = c.waitReady(3)
    environment = _environment(pids[3])
    assert environment["TWISTCLUSTER_WORKER_ID"] == "3"
    assert environment["TWISTCLUSTER_WORKER_SLOT"] == slots[2]


def test_handoffs_in_flight_to_a_dying_worker_go_to_another(cluster):
    """
    Connections handed to a worker that never acks them (stopped, then
    killed) are taken back and served by another worker: no client hangs.
    Node leaks these.
    """
    c = cluster("--workers", "2", "--listen", "tcp:0:interface=127.0.0.1", APP)
    pids = c.waitReady(2)
    address = c.address()
    os.kill(pids[1], signal.SIGSTOP)
    try:
        clients = [connect(address, timeout=15) for _ in range(6)]
        for i, sock in enumerate(clients):
            sock.sendall(b"request %d\n" % i)
        # Worker 2 greets its share while worker 1 sits on the rest, unacked.
        greeted = waitUntil(
            lambda: [s for s in select.select(clients, [], [], 0.1)[0]], 10, "worker 2's greetings"
        )
        assert 0 < len(greeted) < len(clients)
    finally:
        # A stopped process dies of SIGKILL too; no SIGCONT after it, which
        # fails once the master has reaped it.
        os.kill(pids[1], signal.SIGKILL)
    c.waitFor(r"\d+ hand-offs in flight to a lost worker go to others")
    for i, sock in enumerate(clients):
        greeting = readLine(sock)
        assert greeting.startswith("worker="), greeting
        assert not greeting.startswith("worker=1 ")
        assert readLine(sock) == f"request {i}\n"
        sock.close()


def test_workers_run_the_masters_reactor(cluster):
    """
    `twist --reactor asyncio cluster ...`: the workers run the asyncio
    reactor too.
    """
    c = cluster(
        "--workers", "1", "--listen", "tcp:0:interface=127.0.0.1", APP, twistArgs=("--reactor", "asyncio")
    )
    c.waitReady(1)
    c.waitFor(r"\[worker 1\] worker 1 serving .* \(AsyncioSelectorReactor\)")
    assert whoServes(c.address())[0] == 1
