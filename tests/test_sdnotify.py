"""
sd_notify: what the service manager hears, over a real AF_UNIX datagram
socket standing in for systemd (there is no systemd as PID 1 here).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import threading
import time
import uuid

import pytest
from twisted.internet.task import Clock

from tests._cluster import connect, readLine
from twistcluster._master.sdnotify import (
    EXTEND_EVERY,
    MASTER_ONLY_VARIABLES,
    QUEUE_LIMIT,
    NotifySocket,
    ServiceNotifier,
    socketAddress,
    takeServiceManagerEnvironment,
)

APP = "tests.serviceapps.GreetingFactory"
LISTEN = "tcp:0:interface=127.0.0.1"


class ServiceManager:
    """
    A fake service manager: a datagram socket (a path, or an abstract name),
    and every message it receives with the monotonic time it arrived.
    """

    def __init__(self, tmp_path, abstract: bool = False) -> None:
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = f"twistcluster-test-{uuid.uuid4().hex}"
            self.socket.bind("\0" + name)
            self.address = "@" + name
        else:
            self.address = str(tmp_path / "notify.sock")
            self.socket.bind(self.address)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = self.socket.recv(65536)
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            with self._changed:
                self.messages.append((time.monotonic(), fields))
                self._changed.notify_all()

    def waitFor(self, name: str, after: int = 0, timeout: float = 30.0) -> tuple[int, dict[str, str]]:
        """
        The first message from index C{after} on that carries C{name}: its
        index and its fields.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for index in range(after, len(self.messages)):
                    if name in self.messages[index][1]:
                        return index, self.messages[index][1]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no {name} within {timeout}s: {self.messages}")
                self._changed.wait(remaining)

    def environment(self, **more: str) -> dict[str, str]:
        return {"NOTIFY_SOCKET": self.address, **more}

    def close(self) -> None:
        self.socket.close()


@pytest.fixture
def manager(tmp_path):
    m = ServiceManager(tmp_path)
    yield m
    m.close()


def greeting(address) -> dict:
    with connect(address, timeout=5) as sock:
        return json.loads(readLine(sock))


# The notifier alone, on a fake clock


class FakeSocket:
    def __init__(self, refuse: int = 0) -> None:
        self.sent: list[bytes] = []
        self.refuse = refuse

    def setblocking(self, flag: bool) -> None:
        assert flag is False

    def sendto(self, data: bytes, address: str) -> int:
        if self.refuse:
            self.refuse -= 1
            raise BlockingIOError()
        self.sent.append(data)
        return len(data)

    def close(self) -> None:
        pass


def notifierWith(clock, watchdogUsec=None, refuse=0, monotonic=lambda: 1234):
    fake = FakeSocket(refuse)
    return ServiceNotifier(clock, NotifySocket(clock, "/x", fake), watchdogUsec, monotonic), fake


def texts(fake: FakeSocket) -> list[str]:
    return [data.decode() for data in fake.sent]


def test_addresses_and_environment():
    """
    A path, or an abstract name (@ becomes the leading NUL); the variables
    leave the master's environment, so no worker inherits them.
    """
    assert socketAddress("/run/systemd/notify") == "/run/systemd/notify"
    assert socketAddress("@abstract/name") == "\0abstract/name"
    with pytest.raises(ValueError):
        socketAddress("relative")
    environ = {name: "1" for name in MASTER_ONLY_VARIABLES} | {"HOME": "/root"}
    taken = takeServiceManagerEnvironment(environ)
    assert environ == {"HOME": "/root"}
    assert set(taken) == set(MASTER_ONLY_VARIABLES)
    clock = Clock()
    assert not ServiceNotifier.fromEnvironment(clock, {}, 1).enabled
    others = ServiceNotifier.fromEnvironment(
        clock, {"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "2"}, 1
    )
    assert others.enabled and others.watchdogInterval is None
    ours = ServiceNotifier.fromEnvironment(clock, {"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "1000000"}, 1)
    assert ours.watchdogInterval == 0.5


def test_watchdog_at_half_the_period():
    clock = Clock()
    notifier, fake = notifierWith(clock, watchdogUsec=2_000_000)
    notifier.starting()
    clock.advance(0.999)
    assert texts(fake).count("WATCHDOG=1\n") == 1
    clock.advance(0.001)
    assert texts(fake).count("WATCHDOG=1\n") == 2
    notifier.close()
    clock.advance(10)
    assert texts(fake).count("WATCHDOG=1\n") == 2


def test_ready_reload_stop_sequence():
    """
    READY=1 once; RELOADING=1 with MONOTONIC_USEC in one datagram; READY=1
    when the last reload under way ends; EXTEND_TIMEOUT_USEC while starting
    and reloading, not once ready; STOPPING=1, and no READY=1 after it.
    """
    clock = Clock()
    notifier, fake = notifierWith(clock)
    notifier.starting()
    clock.advance(EXTEND_EVERY)
    assert texts(fake) == ["EXTEND_TIMEOUT_USEC=30000000\n"]
    notifier.status("1 ready")
    notifier.isReady("2 ready")
    notifier.isReady("2 ready")
    assert texts(fake)[1:] == ["STATUS=1 ready\n", "READY=1\nSTATUS=2 ready\n"]
    clock.advance(EXTEND_EVERY * 3)
    assert len(fake.sent) == 3
    notifier.reload("reloading")
    notifier.reload("reloading again")
    assert texts(fake)[3] == "RELOADING=1\nMONOTONIC_USEC=1234\nSTATUS=reloading\n"
    clock.advance(EXTEND_EVERY)
    assert texts(fake)[-1] == "EXTEND_TIMEOUT_USEC=30000000\n"
    notifier.reloaded("one done")
    assert "READY=1" not in texts(fake)[-1]
    notifier.reloaded("both done")
    assert texts(fake)[-1] == "READY=1\nSTATUS=both done\n"
    notifier.stopping("stopping")
    notifier.isReady("late")
    assert texts(fake)[-2:] == ["STOPPING=1\nSTATUS=stopping\n", "STATUS=late\n"]
    notifier.mainPID(4242)
    assert texts(fake)[-1] == "MAINPID=4242\n"


def test_never_blocks_and_keeps_order():
    """
    A service manager that does not read: sends return at once, and what the
    kernel could not take goes out later, in order.
    """
    clock = Clock()
    notifier, fake = notifierWith(clock, refuse=2)
    notifier.status("a")
    notifier.status("b")
    assert fake.sent == []
    clock.advance(0.05)
    assert fake.sent == []
    clock.advance(0.05)
    assert texts(fake) == ["STATUS=a\n", "STATUS=b\n"]


def test_real_socket_never_blocks(tmp_path):
    """
    The same on a real socket whose reader never reads: the queue is
    bounded, nothing blocks, and once the reader reads the rest arrives.
    """
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "full.sock")
    receiver.bind(path)
    clock = Clock()
    sender = NotifySocket(clock, path)
    started = time.monotonic()
    for n in range(5000):
        sender.send(f"STATUS={n}")
    assert time.monotonic() - started < 5
    receiver.setblocking(False)
    received = []
    while True:
        try:
            received.append(receiver.recv(100).decode())
        except BlockingIOError:
            if not sender._queue:
                break
            clock.advance(0.05)
    assert received[-1] == "STATUS=4999"
    assert len(received) < 5000  # the kernel's queue, then the newest QUEUE_LIMIT
    assert received[-QUEUE_LIMIT:] == [f"STATUS={n}" for n in range(5000 - QUEUE_LIMIT, 5000)]
    sender.close()
    receiver.close()


def test_abstract_socket(tmp_path):
    manager = ServiceManager(tmp_path, abstract=True)
    try:
        sender = NotifySocket(Clock(), socketAddress(manager.address))
        sender.send("READY=1")
        assert manager.waitFor("READY", timeout=10)[1] == {"READY": "1"}
        sender.close()
    finally:
        manager.close()


# A real master under a fake service manager


def test_ready_only_once_every_worker_serves(cluster, manager):
    """
    READY=1 comes once all 3 workers listen: a connection made at that
    moment is served at once, and the next ones reach every worker.  No
    worker sees the service manager's variables.
    """
    env = manager.environment(WATCHDOG_USEC="60000000", LISTEN_FDS="0", LISTEN_PID="1", LISTEN_FDNAMES="x")
    c = cluster("--workers", "3", "--listen", LISTEN, APP, env=env)
    index, ready = manager.waitFor("READY")
    first = greeting(c.address())
    assert first["seen"] == []
    workers = {first["worker"]} | {greeting(c.address())["worker"] for _ in range(2)}
    assert workers == {"1", "2", "3"}
    assert re.match(r"3 workers ready \(3 configured, rr\) on tcp:127\.0\.0\.1:\d+$", ready["STATUS"])
    before = [fields for _, fields in manager.messages[:index]]
    assert all("READY" not in fields for fields in before)
    assert any(fields.get("STATUS", "").startswith("2 workers ready") for fields in before), before
    for pid in c.waitReady(3).values():
        environ = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
        assert not [v for v in environ if v.split(b"=")[0].decode() in MASTER_ONLY_VARIABLES]


def test_reload_and_stop(cluster, manager):
    """
    HUP: RELOADING=1 with MONOTONIC_USEC (in the same datagram, not earlier
    than the signal), then READY=1 once the rolling restart is done; TERM:
    STOPPING=1, and the master exits 0.
    """
    c = cluster("--workers", "2", "--listen", LISTEN, APP, env=manager.environment())
    index, _ = manager.waitFor("READY")
    signalled = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    c.signal(signal.SIGHUP)
    reloading, fields = manager.waitFor("RELOADING", after=index + 1)
    assert fields["RELOADING"] == "1"
    assert int(fields["MONOTONIC_USEC"]) >= signalled
    assert fields["STATUS"].startswith("reloading: ")
    again, fields = manager.waitFor("READY", after=reloading + 1)
    c.waitFor(r"rolling restart done: 2 of 2 replaced")
    assert fields["STATUS"].startswith("2 workers ready")
    c.signal(signal.SIGTERM)
    _, fields = manager.waitFor("STOPPING", after=again + 1)
    assert fields["STATUS"].startswith("stopping: ")
    assert c.wait() == 0


def test_reload_and_scale_over_the_control_socket(cluster, manager):
    """
    C{twistcluster reload} is told to the service manager as C{HUP} is
    (RELOADING=1, then READY=1), and C{twistcluster scale 3} updates STATUS
    up to the third worker ready.
    """
    from tests.test_ctl import ctl

    c = cluster("--workers", "2", "--listen", LISTEN, APP, env=manager.environment())
    index, _ = manager.waitFor("READY")
    done = ctl(c, "reload")
    assert done.returncode == 0, done.stderr
    reloading, fields = manager.waitFor("RELOADING", after=index + 1)
    assert fields["STATUS"].startswith("reloading: ")
    again, fields = manager.waitFor("READY", after=reloading + 1)
    assert fields["STATUS"].startswith("2 workers ready (2 configured")
    done = ctl(c, "scale", "3")
    assert done.returncode == 0, done.stderr
    index, fields = manager.waitFor("STATUS", after=again + 1)
    while not fields["STATUS"].startswith("3 workers ready (3 configured"):
        index, fields = manager.waitFor("STATUS", after=index + 1)


def test_watchdog_from_the_reactor(cluster, manager, tmp_path):
    """
    WATCHDOG=1 every WATCHDOG_USEC / 2, and none while the master's reactor
    is stalled (a test hook blocks it for 2 s): a stuck master is caught.
    """
    stall = tmp_path / "stall"
    env = manager.environment(WATCHDOG_USEC="400000", TWISTCLUSTER_TEST_STALL_FILE=str(stall))
    c = cluster("--workers", "1", "--listen", LISTEN, APP, env=env)
    manager.waitFor("READY")
    time.sleep(1.5)
    stall.write_text("2")
    # The hook removes the file when it begins the stall.
    deadline = time.monotonic() + 10
    while stall.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    stalledAt = time.monotonic()
    time.sleep(3.5)
    beats = [t for t, fields in manager.messages if "WATCHDOG" in fields]
    gaps = [b - a for a, b in zip(beats, beats[1:])]
    before = [g for b, g in zip(beats[1:], gaps) if b < stalledAt - 0.2]
    assert len(before) >= 4
    assert 0.1 < sorted(before)[len(before) // 2] < 0.5, before
    assert not [t for t in beats if stalledAt + 0.2 < t < stalledAt + 1.8], (stalledAt, beats)
    assert max(gaps) >= 1.8
    assert [t for t in beats if t > stalledAt + 2.1], "the watchdog resumed"
    c.signal(signal.SIGTERM)
    assert c.wait() == 0


def test_no_notify_socket_no_messages(cluster):
    """
    Without NOTIFY_SOCKET the master notifies nothing and runs as before.
    """
    env = {k: v for k, v in os.environ.items() if k not in MASTER_ONLY_VARIABLES}
    c = cluster("--workers", "1", "--listen", LISTEN, APP, env=env)
    c.waitReady(1)
    assert greeting(c.address())["seen"] == []
