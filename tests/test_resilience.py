"""
Resilience, with real processes and signals: respawn and giving up, rolling
restarts under load, scaling, hung workers, recycling, backpressure, EMFILE,
and stopping at awkward moments.
"""

from __future__ import annotations

import collections
import os
import resource
import signal
import threading
import time
from pathlib import Path

import pytest

from tests._cluster import connect, readLine, stopped, waitUntil, whoServes

LOCAL = "tcp:0:interface=127.0.0.1"
APP = "tests.clusterapps.WhoAmIFactory"
TROUBLED = "tests.clusterapps.TroubledFactory"


class Load:
    """
    A real client hammering the cluster with short connections from a thread
    until stopped: connect, read the greeting, echo a line, close.
    """

    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address
        self.served: list[str] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with connect(self.address, timeout=10) as sock:
                    greeting = readLine(sock)
                    sock.sendall(b"ping\n")
                    echo = readLine(sock)
                if not greeting.startswith("worker=") or echo != "ping\n":
                    self.failures.append(f"bad answer {greeting!r} {echo!r}")
                else:
                    self.served.append(greeting)
            except OSError as e:
                self.failures.append(repr(e))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        assert not self._thread.is_alive()


def test_crash_looping_factory_ends_the_master(cluster):
    """
    Workers that keep failing to boot, none ever ready: after a bounded
    number of spawns the master exits non-zero, with the worker's own error.
    """
    c = cluster("--workers", "2", "--listen", LOCAL, "tests.clusterapps.CannotStart")
    assert c.wait(timeout=60) == 1
    assert c.matches(
        r"giving up: workers keep failing to boot \(5 in a row, none ever ready\); "
        r"the last one said: .*RuntimeError: boom: this factory never starts"
    )
    spawned = {m.group(1) for m in c.matches(r"worker (\d+) \(pid \d+\) exited with code 3")}
    assert 5 <= len(spawned) <= 7
    assert c.leftovers() == []


@pytest.mark.parametrize("policy", ["rr", "reuseport"])
def test_rolling_restart_under_load_loads_new_code(cluster, tmp_path, policy):
    """
    HUP: each worker is replaced by a new one, which is ready before the old
    one leaves; a client hammering the port meanwhile sees no failure (under
    reuseport too: each replacement takes over its predecessor's socket,
    and the connections queued on it); the new workers run the changed
    module.
    """
    app = tmp_path / "versioned.py"
    app.write_text(_versioned("v1"))
    c = cluster(
        "--workers", "2", "--scheduling", policy, "--listen", LOCAL, "versioned.Factory", cwd=tmp_path
    )
    c.waitReady(2)
    address = c.address()
    load = Load(address)
    try:
        waitUntil(lambda: len(load.served) >= 20, 20, "load to get going")
        app.write_text(_versioned("v2"))
        c.signal(signal.SIGHUP)
        c.waitFor(r"rolling restart done: 2 of 2 replaced", timeout=60)
        c.waitFor(r"worker [12] \(pid \d+\) exited with code 0", count=2, timeout=60)
        served = len(load.served)
        waitUntil(lambda: len(load.served) >= served + 20, 20, "load after the restart")
    finally:
        load.stop()
    assert load.failures == []
    assert {g.split()[0] for g in load.served[-10:]} <= {"worker=3", "worker=4"}
    with connect(address) as sock:
        assert readLine(sock).startswith("worker=")
        sock.sendall(b"version\n")
        assert readLine(sock) == "v2\n"


def _versioned(version: str) -> str:
    return f'''
import os
from twisted.internet.protocol import Factory as _Factory, Protocol

class Versioned(Protocol):
    def connectionMade(self):
        workerId = os.environ["TWISTCLUSTER_WORKER_ID"].encode()
        self.transport.write(b"worker=%s pid=%d\\n" % (workerId, os.getpid()))

    def dataReceived(self, data):
        self.transport.write(b"{version}\\n" if data == b"version\\n" else data)

class Factory(_Factory):
    protocol = Versioned
'''


def test_scale_up_and_down(cluster):
    """
    TTIN adds a worker; TTOU drains one (its open connection finishes) rather
    than killing it.
    """
    c = cluster("--workers", "1", "--listen", LOCAL, APP)
    c.waitReady(1)
    address = c.address()
    c.signal(signal.SIGTTIN)
    c.waitReady(2)
    served = {whoServes(address)[0] for _ in range(4)}
    assert served == {1, 2}
    # Hold a connection open on worker 2 (the newest, which TTOU drains).
    held = None
    for _ in range(4):
        sock = connect(address)
        if readLine(sock).startswith("worker=2 "):
            held = sock
            break
        sock.close()
    assert held is not None
    c.signal(signal.SIGTTOU)
    c.waitFor(r"one worker fewer: 1")
    c.waitFor(r"worker 2 closing; 1 connections open")
    held.sendall(b"still served\n")
    assert readLine(held) == "still served\n"
    held.close()
    c.waitFor(r"worker 2 \(pid \d+\) exited with code 0")
    assert {whoServes(address)[0] for _ in range(3)} == {1}


def test_all_workers_killed_at_once_no_connection_refused(cluster):
    """
    With every worker dead at once, the listening socket stays open: new
    clients wait and are served by the replacements (Node refuses them).
    """
    c = cluster("--workers", "2", "--listen", LOCAL, APP)
    pids = c.waitReady(2)
    address = c.address()
    for pid in pids.values():
        os.kill(pid, signal.SIGKILL)
    clients = [connect(address, timeout=30) for _ in range(10)]
    greetings = [readLine(sock) for sock in clients]
    for sock in clients:
        sock.close()
    assert all(g.startswith(("worker=3 ", "worker=4 ")) for g in greetings), greetings


def test_hung_worker_is_aborted_and_replaced(cluster):
    """
    A busy loop in a Protocol: the worker stops answering its heartbeat; it
    is taken out of rotation, aborted (its stack logged) and replaced within
    --worker-timeout plus a margin, while requests keep being served.
    """
    c = cluster("--workers", "2", "--worker-timeout", "1", "--listen", LOCAL, TROUBLED)
    c.waitReady(2)
    address = c.address()
    victim = connect(address)
    hungId = int(readLine(victim).split()[0].split("=")[1])
    victim.sendall(b"hang\n")
    started = time.monotonic()
    # Others are served meanwhile (some wait until the hung worker's share is
    # taken back).
    for _ in range(6):
        assert whoServes(address)[0] != hungId
    c.waitFor(rf"worker {hungId} \(pid \d+\) is hung \(no heartbeat answer for 1s\); aborting it")
    assert time.monotonic() - started < 1 + 5
    c.waitFor(r"in dataReceived")
    c.waitFor(rf"worker {hungId} \(pid \d+\) exited with signal 6")
    c.waitReady(3)
    victim.close()


def test_stopped_worker_is_killed_and_replaced_and_term_still_stops(cluster):
    """
    A worker SIGSTOPped (it cannot even take its SIGABRT): it is aborted
    after --worker-timeout, killed after the abort grace, and replaced
    within both plus a margin; TERM then stops the master within
    --shutdown-timeout plus a margin (issue 13, 1: the exit was never
    handled, the cluster stayed a worker short and TERM was ignored).
    """
    c = cluster("--workers", "2", "--worker-timeout", "3", "--shutdown-timeout", "5", "--listen", LOCAL, APP)
    pids = c.waitReady(2)
    address = c.address()
    os.kill(pids[1], signal.SIGSTOP)
    stopped = time.monotonic()
    c.waitFor(r"worker 1 \(pid \d+\) is hung \(no heartbeat answer for 3s\); aborting it", timeout=30)
    c.waitFor(r"worker 1 \(pid \d+\) exited with signal 9", timeout=30)
    replacement = c.waitReady(3, timeout=60)
    assert 3 in replacement
    # worker-timeout 3 + a check interval + abort grace 3 + a boot, on a busy machine
    assert time.monotonic() - stopped < 3 + 3 + 20
    assert {whoServes(address)[0] for _ in range(4)} <= {2, 3}
    c.signal(signal.SIGTERM)
    stopping = time.monotonic()
    assert c.wait(timeout=5 + 25) == 0
    assert time.monotonic() - stopping < 5 + 15
    assert c.leftovers() == []


def test_recycled_after_max_connections(cluster):
    c = cluster("--workers", "1", "--max-connections", "5", "--listen", LOCAL, APP)
    c.waitReady(1)
    address = c.address()
    served = [whoServes(address)[0] for _ in range(5)]
    assert served == [1] * 5
    c.waitFor(r"worker 1 \(pid \d+\) took 5 connections; replacing it")
    # It serves on until its replacement is ready, then drains and leaves.
    c.waitReady(2)
    c.waitFor(r"worker 1 \(pid \d+\) exited with code 0")
    assert {whoServes(address)[0] for _ in range(3)} == {2}


def test_worn_out_workers_leave_the_rotation_in_a_burst(cluster):
    """
    --max-connections 20 under a burst (4 clients connecting as fast as they
    can): a worn-out worker leaves the rotation at once while another worker
    is ready, so all but the last of the first workers serve no more than
    their limit (plus its 10% jitter, and what was already on its way); the
    last one serves on, only until another worker is ready (issue 13, 11:
    every worker served about 300).
    """
    c = cluster("--workers", "4", "--max-connections", "20", "--listen", LOCAL, APP)
    c.waitReady(4)
    address = c.address()
    served: collections.Counter[int] = collections.Counter()
    failures: list[str] = []
    lock = threading.Lock()

    def client() -> None:
        for _ in range(100):
            try:
                workerId = whoServes(address)[0]
            except OSError as e:
                failures.append(repr(e))
                continue
            with lock:
                served[workerId] += 1

    clients = [threading.Thread(target=client) for _ in range(4)]
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join(120)
    assert failures == []
    assert sum(served.values()) == 400
    limit = 20 + 2 + 4  # the jitter, and each client's connection on its way
    withinLimit = [w for w in (1, 2, 3, 4) if served[w] <= limit]
    assert len(withinLimit) >= 3, served
    left = {
        int(m.group(1))
        for m in c.matches(
            r"worker (\d+) \(pid \d+\) took \d+ connections; "
            r"replacing it \(it leaves the rotation now\)"
        )
    }
    assert len(left & {1, 2, 3, 4}) >= 3, c.output
    # The last one leaves once another worker is ready.
    for last in {1, 2, 3, 4} - left:
        c.waitFor(rf"worker {last} \(pid \d+\) leaves the rotation \(worker \d+ is ready\)", timeout=60)


def test_recycled_after_max_memory_gracefully(cluster):
    c = cluster(
        "--workers", "1", "--worker-timeout", "1", "--max-memory", "150M", "--listen", LOCAL, TROUBLED
    )
    c.waitReady(1)
    address = c.address()
    sock = connect(address)
    assert readLine(sock).startswith("worker=1 ")
    sock.sendall(b"grow\n")
    assert readLine(sock) == "grow\n"
    c.waitFor(r"worker 1 \(pid \d+\) uses \d+ MiB \(limit 150 MiB\); replacing it")
    c.waitReady(2)
    c.waitFor(r"worker 1 closing; 1 connections open")
    sock.sendall(b"drained, not killed\n")
    assert readLine(sock) == "drained, not killed\n"
    sock.close()
    c.waitFor(r"worker 1 \(pid \d+\) exited with code 0")
    assert whoServes(address)[0] == 2


def _masterDescriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _cpuSeconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_backpressure_bounds_what_the_master_holds(cluster):
    """
    Every worker saturated (stopped): the master accepts a bounded number of
    connections (16 unacked per worker + 64 queued) and leaves the rest in
    the kernel backlog; once the workers resume, every client is served.
    """
    c = cluster("--workers", "2", "--listen", "tcp:0:interface=127.0.0.1:backlog=256", APP)
    pids = c.waitReady(2)
    address = c.address()
    baseline = _masterDescriptors(c.process.pid)
    with stopped(*pids.values()):
        clients = [connect(address, timeout=30) for _ in range(150)]
        held = waitUntil(
            lambda: (
                (_masterDescriptors(c.process.pid) - baseline >= 96) and _masterDescriptors(c.process.pid)
            ),
            15,
            "the master to fill its queue",
        )
        for _ in range(10):
            assert _masterDescriptors(c.process.pid) - baseline <= 96
            time.sleep(0.05)
    greetings = [readLine(sock) for sock in clients]
    for sock in clients:
        sock.close()
    assert all(g.startswith("worker=") for g in greetings)
    assert held - baseline == 96


def test_emfile_in_the_master_backs_off_and_recovers(cluster):
    """
    Out of descriptors in the master's accept loop: no busy loop, no
    accept-and-close; once descriptors are back every client is served.
    """
    c = cluster("--workers", "2", "--listen", "tcp:0:interface=127.0.0.1:backlog=256", APP)
    pids = c.waitReady(2)
    address = c.address()
    master = c.process.pid
    soft, hard = resource.prlimit(master, resource.RLIMIT_NOFILE)
    resource.prlimit(master, resource.RLIMIT_NOFILE, (_masterDescriptors(master) + 10, hard))
    with stopped(*pids.values()):
        clients = [connect(address, timeout=30) for _ in range(40)]
        c.waitFor(r"accept\(\) failed: EMFILE; retrying every 0.1s until descriptors are free")
        before = _cpuSeconds(master)
        time.sleep(1.0)  # measuring CPU over a second, not synchronising
        assert _cpuSeconds(master) - before < 0.3
        # Descriptors back before the workers ack: acks that freed a few
        # under the low limit would start a second episode.
        resource.prlimit(master, resource.RLIMIT_NOFILE, (soft, hard))
    greetings = [readLine(sock) for sock in clients]
    for sock in clients:
        sock.close()
    assert all(g.startswith("worker=") for g in greetings), greetings
    c.waitFor(r"accepting again after EMFILE")
    assert len(c.matches(r"accept\(\) failed: EMFILE")) == 1


def test_stop_during_a_rolling_restart(cluster):
    c = cluster("--workers", "2", "--listen", LOCAL, APP)
    c.waitReady(2)
    c.signal(signal.SIGHUP)
    c.waitFor(r"rolling restart of 2 workers")
    c.signal(signal.SIGTERM)
    assert c.wait(timeout=30) == 0
    assert c.leftovers() == []


def test_second_term_stops_faster(cluster):
    """
    TERM waits for open connections (up to --shutdown-timeout); a second
    TERM kills the workers at once.
    """
    c = cluster("--workers", "1", "--shutdown-timeout", "60", "--listen", LOCAL, APP)
    c.waitReady(1)
    with connect(c.address()) as sock:
        readLine(sock)
        c.signal(signal.SIGTERM)
        c.waitFor(r"worker 1 closing; 1 connections open")
        started = time.monotonic()
        c.signal(signal.SIGTERM)
        assert c.wait(timeout=30) == 0
        assert time.monotonic() - started < 10
    assert c.matches(r"SIGTERM again: killing the workers now")
    assert c.leftovers() == []


def test_ctrl_c_reaches_every_process_but_the_master_orchestrates(cluster):
    """
    INT to the whole process group (a terminal's Ctrl-C): workers ignore it;
    the master stops gracefully, so an open connection is still served.
    """
    c = cluster("--workers", "2", "--listen", LOCAL, APP)
    c.waitReady(2)
    with connect(c.address()) as sock:
        readLine(sock)
        os.killpg(c.process.pid, signal.SIGINT)
        c.waitFor(r"closing; 1 connections open")
        sock.sendall(b"after ctrl-c\n")
        assert readLine(sock) == "after ctrl-c\n"
    assert c.wait(timeout=30) == 0
    assert c.leftovers() == []
