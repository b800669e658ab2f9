"""
Upgrading the master itself (C{USR2}): real masters run from release
directories of the test's own behind a C{current} symlink, under continuous
load from a real client; the master re-executes itself (same pid), keeps
its listening sockets, and its workers end on the new code.
"""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import ssl
import sys
import time
from pathlib import Path

import pytest

from tests._cluster import Cluster, listeningSockets, waitUntil
from tests._nobody import privilegedPort
from tests._tls import selfSignedCertificate
from tests._upgrading import (
    ContinuousLoad,
    Releases,
    childrenOf,
    descriptorCount,
    longestGap,
    residentBytes,
    socketInode,
)
from tests.test_ctl import ctl, status
from tests.test_privileges import app, assertNobody  # noqa: F401 (a fixture)
from tests.test_sdnotify import ServiceManager

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def releases(tmp_path: Path) -> Releases:
    """
    Two releases, C{v1} (current) and C{v2}: each its own twistcluster
    (versions C{0.1.0+v1}, C{0.1.0+v2}) and application.
    """
    made = Releases(tmp_path)
    made.make("v1", version="0.1.0+v1")
    made.make("v2", version="0.1.0+v2")
    made.switch("v1")
    return made


def upgradeEvents(c: Cluster) -> list[dict]:
    return [e for e in c._master.running.events if e.get("clusterEvent") == "upgrade"]


def outcomes(c: Cluster, count: int, timeout: float = 30.0) -> list[dict]:
    """
    The outcomes of the master's upgrades, once there are C{count}.
    """
    return c._waitUntil(
        lambda running: upgradeEvents(c) if len(upgradeEvents(c)) >= count else None, timeout, "upgrades"
    )


def upgrade(c: Cluster, timeout: float = 90.0) -> dict:
    """
    Send USR2 to the master and wait for the upgrade's outcome (an event of
    the image that ends it).
    """
    before = len(upgradeEvents(c))
    c.signal(signal.SIGUSR2)
    c._waitUntil(lambda running: len(upgradeEvents(c)) > before or None, timeout, "the upgrade's outcome")
    return upgradeEvents(c)[-1]


def boundAddresses(c: Cluster) -> list[str]:
    return [address for _, address, _ in c.bound()]


@pytest.mark.parametrize("policy", ["rr", "none", "reuseport"])
def test_upgrade_under_load(cluster, releases: Releases, tmp_path: Path, policy: str) -> None:
    """
    Under continuous load (short connections and keep-alive, on a tcp:0 and
    a unix listen): not one request fails, the master keeps its pid and its
    ports, and every connection opened after the upgrade is served by the
    new release's application on the new twistcluster.
    """
    path = str(tmp_path / "app.sock")
    c = releases.start(
        cluster, "--workers", "2", "--scheduling", policy, "--listen", "tcp:0", "--listen", f"unix:{path}"
    )
    c.waitReady(2)
    tcp = c.address("tcp:0")
    before = boundAddresses(c)
    masterPid = c.process.pid
    load = ContinuousLoad([tcp, path], short=2, keepAlive=1)
    try:
        load.waitFor(100)
        releases.switch("v2")
        started = time.monotonic()
        outcome = upgrade(c)
        done = time.monotonic()
        load.waitFor(200)
    finally:
        outcomes = load.stop()
    assert outcome["upgradeResult"] == "done", c.output
    failed = [o for o in outcomes if not o.ok]
    assert not failed, f"{len(failed)} of {len(outcomes)} failed, e.g. {failed[:3]}"
    after = [o for o in outcomes if o.opened > done]
    assert after and {o.release for o in after} == {("v2", "0.1.0+v2")}
    assert {o.release for o in outcomes if o.ended < started} == {("v1", "0.1.0+v1")}
    # The same process (its pid), now running the new code, on the same sockets.
    assert c.process.poll() is None and masterPid == c.process.pid
    # (Its environment as exec'd it names the state it took over.)
    assert b"TWISTCLUSTER_UPGRADE_STATE=" in Path(f"/proc/{masterPid}/environ").read_bytes()
    assert boundAddresses(c)[-2:] == before
    print(f"{policy}: longest gap between accepted connections {longestGap(outcomes, started, done):.3f}s")


def answer(address: tuple[str, int] | str) -> str:
    """
    One request on a new connection: the application's answer.
    """
    load = ContinuousLoad([address], short=1, keepAlive=0)
    try:
        load.waitFor(1)
    finally:
        outcomes = load.stop()
    assert outcomes[0].ok, outcomes[0]
    return outcomes[0].answer


def test_broken_upgrades_change_nothing(cluster, releases: Releases) -> None:
    """
    Under load, three upgrades that cannot work: the new application does
    not import, the new twistcluster crashes the master at start (both
    found by the check: nothing changes), and a new twistcluster that
    crashes only when it takes over (the check passes, the exec happens, and
    the old code runs again on the same sockets and workers).  Not one
    request fails, the old code serves on, and each time the reason is
    told.
    """
    releases.make(
        "no-app", version="0.1.0+v2", edits={"app.py": lambda text: "import missing_module\n" + text}
    )
    crashing = "twistcluster/_master/service.py"
    releases.make(
        "crash-at-start",
        version="0.1.0+v3",
        edits={
            crashing: lambda text: text.replace(
                "        self._reactor = reactor\n",
                '        raise RuntimeError("a bug in the new master")\n        self._reactor = reactor\n',
                1,
            )
        },
    )
    releases.make(
        "crash-on-resume",
        version="0.1.0+v4",
        edits={
            "twistcluster/_master/resume.py": lambda text: text.replace(
                "        workers = {}\n",
                '        raise RuntimeError("cannot adopt, for the test")\n        workers = {}\n',
                1,
            )
        },
    )
    c = releases.start(cluster, "--workers", "2", "--listen", "tcp:0")
    workers = c.waitReady(2)
    tcp = c.address()
    load = ContinuousLoad([tcp], short=2, keepAlive=1)
    try:
        load.waitFor(50)
        releases.switch("no-app")
        noApp = upgrade(c)
        releases.switch("crash-at-start")
        crash = upgrade(c)
        releases.switch("crash-on-resume")
        rollback = upgrade(c)
        load.waitFor(100)
    finally:
        outcomes = load.stop()
    assert (noApp["upgradeResult"], noApp["reason"]) == (
        "failed",
        "the new code does not start: FACTORY: cannot import 'app.factory': "
        "ModuleNotFoundError: No module named 'missing_module'",
    ), c.output
    assert (crash["upgradeResult"], crash["reason"]) == (
        "failed",
        "the new code does not start: RuntimeError: a bug in the new master",
    )
    assert (rollback["upgradeResult"], rollback["reason"]) == (
        "rolled back",
        "RuntimeError: cannot adopt, for the test",
    )
    assert (rollback["version"], rollback["previous"]) == ("0.1.0+v1", "0.1.0+v1")
    failed = [o for o in outcomes if not o.ok]
    assert not failed, f"{len(failed)} of {len(outcomes)} failed, e.g. {failed[:3]}"
    assert {o.release for o in outcomes} == {("v1", "0.1.0+v1")}
    # The same workers serve on (the rollback adopted them back).
    assert set(c.waitReady(2)) == set(workers) and sorted(childrenOf(c.process.pid)) == sorted(
        workers.values()
    )
    assert answer(tcp).startswith("release=v1 twistcluster=0.1.0+v1")


def test_ten_upgrades_leak_nothing(cluster, releases: Releases) -> None:
    """
    Ten upgrades in a row, back and forth between two releases: the master's
    descriptors and its processes are what they were after the first start
    (every old worker gone, every check reaped), and its memory is no more
    than a fresh start's.
    """
    c = releases.start(cluster, "--workers", "1", "--listen", "tcp:0")
    c.waitReady(1)
    tcp, pid = c.address(), c.process.pid
    baseline = descriptorCount(pid), len(childrenOf(pid)), residentBytes(pid)
    for n in range(10):
        release = "v2" if n % 2 == 0 else "v1"
        releases.switch(release)
        outcome = upgrade(c)
        assert outcome["upgradeResult"] == "done", c.output
        assert answer(tcp).startswith(f"release={release} twistcluster=0.1.0+{release} ")
        waitUntil(lambda: len(childrenOf(pid)) == baseline[1], 30, "the old worker to exit")
    # A connection just served may still be the master's until its ack.
    waitUntil(lambda: descriptorCount(pid) == baseline[0], 10, f"{baseline[0]} descriptors in the master")
    assert len(childrenOf(pid)) == baseline[1]
    assert residentBytes(pid) < 1.5 * baseline[2]
    assert c.process.poll() is None and c.process.pid == pid
    c.signal(signal.SIGTERM)
    assert c.wait() == 0


def test_systemd_socket_keeps_serving(cluster, releases: Releases) -> None:
    """
    A socket systemd passed (LISTEN_FDS): the check and the new master find
    it as the first start did, and it serves on, the same socket.
    """
    listening = socket.create_server(("127.0.0.1", 0))
    high = fcntl.fcntl(listening.fileno(), fcntl.F_DUPFD, 100)
    try:
        launcher = [sys.executable, str(Path(__file__).parent / "_activate.py"), str(high), "--"]
        c = releases.start(
            cluster,
            "--workers",
            "1",
            "--listen",
            "systemd:domain=INET:index=0",
            launcher=launcher,
            passFDs=[high],
            env={"LISTEN_FDNAMES": "app"},
        )
        c.waitReady(1)
        address = listening.getsockname()
        assert answer(address).startswith("release=v1 ")
        releases.switch("v2")
        load = ContinuousLoad([address], short=1, keepAlive=1)
        try:
            load.waitFor(20)
            outcome = upgrade(c)
            done = time.monotonic()
            load.waitFor(50)
        finally:
            outcomes = load.stop()
        assert outcome["upgradeResult"] == "done", c.output
        assert all(o.ok for o in outcomes), [o for o in outcomes if not o.ok][:3]
        assert {o.release for o in outcomes if o.opened > done} == {("v2", "0.1.0+v2")}
        assert listeningSockets(port=address[1]) == {socketInode(listening)}
    finally:
        os.close(high)
        listening.close()


def test_stop_during_the_check(cluster, releases: Releases) -> None:
    """
    A second USR2 while an upgrade runs is refused, with a log line; TERM
    while the new code is being checked drops the upgrade (the check is
    killed) and stops gracefully: exit 0, nothing left behind.
    """
    # A check that takes its time: the new application sleeps as it loads.
    releases.make(
        "slow", version="0.1.0+v2", edits={"app.py": lambda text: "import time\ntime.sleep(30)\n" + text}
    )
    c = releases.start(cluster, "--workers", "1", "--listen", "tcp:0")
    c.waitReady(1)
    releases.switch("slow")
    c.signal(signal.SIGUSR2)
    c.waitFor(r"upgrade: checking the new code")
    c.signal(signal.SIGUSR2)
    c.waitFor(r"upgrade refused: an upgrade is under way \(checking\)")
    c.signal(signal.SIGTERM)
    assert c.wait() == 0
    c.waitFor(r"upgrade failed, the old code serves on: the master is stopping")
    waitUntil(lambda: not c.leftovers(), 10, "the check and the worker to be gone")


def test_stop_across_the_exec(cluster, releases: Releases) -> None:
    """
    TERM sent as the master hands over (it arrives while the new image
    starts, with the signals held): the new image gets it once its handlers
    are in place, and stops gracefully.
    """
    c = releases.start(cluster, "--workers", "2", "--listen", "tcp:0")
    c.waitReady(2)
    releases.switch("v2")
    c.signal(signal.SIGUSR2)
    c.waitFor(r"upgrade: handing over")
    c.signal(signal.SIGTERM)
    assert c.wait() == 0
    c.waitFor(r"upgrade: twistcluster 0.1.0\+v2 took over")
    c.waitFor(r"SIGTERM: stopping gracefully")
    waitUntil(lambda: not c.leftovers(), 10, "every worker to be gone")


def test_kill_during_an_upgrade(cluster, releases: Releases) -> None:
    """
    The master killed outright while it hands over: its workers see their
    control channels close, and exit, as with any master's death.
    """
    c = releases.start(cluster, "--workers", "2", "--listen", "tcp:0")
    workers = c.waitReady(2)
    releases.switch("v2")
    c.signal(signal.SIGUSR2)
    c.waitFor(r"upgrade: handing over")
    c.signal(signal.SIGKILL)
    c.wait()
    waitUntil(
        lambda: not any(os.path.exists(f"/proc/{pid}") for pid in workers.values()), 30, "the workers to exit"
    )


def test_upgrade_over_the_control_socket(cluster, releases: Releases) -> None:
    """
    C{twistcluster upgrade} answers once the upgrade is over, from the new
    image of the master (its connection was carried across the exec), and
    the status tells the upgrade; a failed one answers why, exit status 1.
    """
    c = releases.start(cluster, "--workers", "1", "--listen", "tcp:0")
    c.waitReady(1)
    releases.switch("v2")
    done = ctl(c, "upgrade", timeout=120)
    assert (done.returncode, done.stdout, done.stderr) == (
        0,
        "upgraded: twistcluster 0.1.0+v1 -> 0.1.0+v2 (1 workers replaced)\n",
        "",
    ), c.output
    upgrade = status(c)["master"]["upgrade"]
    assert (upgrade["phase"], upgrade["upgrades"]) == ("idle", 1)
    assert {k: upgrade["last"][k] for k in ("result", "from", "to")} == {
        "result": "done",
        "from": "0.1.0+v1",
        "to": "0.1.0+v2",
    }
    releases.make("broken", edits={"app.py": lambda text: text + "\nraise SystemExit('no, not today')\n"})
    releases.switch("broken")
    failed = ctl(c, "upgrade", timeout=120)
    assert (failed.returncode, failed.stdout) == (1, "")
    assert failed.stderr == (
        "twistcluster: error: upgrade failed: the new code does not start: no, not today\n"
    ), c.output
    assert status(c)["master"]["upgrade"]["last"]["result"] == "failed"


def test_service_manager_and_pid_file(cluster, releases: Releases, tmp_path: Path) -> None:
    """
    Under systemd (NOTIFY_SOCKET): RELOADING=1 with MONOTONIC_USEC when the
    upgrade begins, READY=1 once it is over (from the new image), the
    watchdog kept, never MAINPID= (the pid is the same, and so is the pid
    file's); a failed upgrade says READY=1 again at once.
    """
    manager = ServiceManager(tmp_path)
    pidfile = tmp_path / "master.pid"
    try:
        env = manager.environment(WATCHDOG_USEC="2000000")
        c = releases.start(cluster, "--workers", "1", "--listen", "tcp:0", "--pidfile", str(pidfile), env=env)
        index, _ = manager.waitFor("READY")
        releases.switch("v2")
        signalled = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        c.signal(signal.SIGUSR2)
        reloading, fields = manager.waitFor("RELOADING", after=index + 1)
        assert int(fields["MONOTONIC_USEC"]) >= signalled and fields["STATUS"].startswith("upgrading: ")
        ready, fields = manager.waitFor("READY", after=reloading + 1, timeout=120)
        assert outcomes(c, 1)[-1]["upgradeResult"] == "done"
        manager.waitFor("WATCHDOG", after=ready + 1)
        releases.make("broken", edits={"app.py": lambda text: "raise RuntimeError('no')\n" + text})
        releases.switch("broken")
        c.signal(signal.SIGUSR2)
        reloading, _ = manager.waitFor("RELOADING", after=ready + 1)
        manager.waitFor("READY", after=reloading + 1, timeout=120)
        assert outcomes(c, 2)[-1]["upgradeResult"] == "failed"
        assert not [fields for _, fields in manager.messages if "MAINPID" in fields]
        assert pidfile.read_text() == f"{c.process.pid}\n"
        c.signal(signal.SIGTERM)
        assert c.wait() == 0
        assert not pidfile.exists()
    finally:
        manager.close()


def test_upgrade_as_nobody(cluster, app) -> None:  # noqa: F811 (the fixture)
    """
    A master started as root that serves as nobody, under reuseport on a
    port below 1024: the new image runs as nobody, which could bind
    nothing, and binds nothing (it takes over the sockets root bound), its
    new workers are lent the sockets the old ones had, and every request is
    served.
    """
    releases = Releases(app.directory / "deploy")
    releases.make("v1", version="0.1.0+v1")
    releases.make("v2", version="0.1.0+v2")
    releases.switch("v1")
    port = privilegedPort()
    pidfile = app.run / "master.pid"
    c = releases.start(
        cluster,
        *("--user", "nobody", "--scheduling", "reuseport", "--workers", "2"),
        *("--listen", f"tcp:{port}:interface=127.0.0.1", "--pidfile", str(pidfile)),
        python=app.python,
        pythonPath=app.env["PYTHONPATH"].split(os.pathsep),
    )
    c.waitReady(2)
    address = ("127.0.0.1", port)
    load = ContinuousLoad([address], short=2, keepAlive=1)
    try:
        load.waitFor(50)
        releases.switch("v2")
        outcome = upgrade(c)
        done = time.monotonic()
        load.waitFor(100)
    finally:
        outcomes = load.stop()
    assert outcome["upgradeResult"] == "done", c.output
    assert [o for o in outcomes if not o.ok] == []
    assert {o.release for o in outcomes if o.opened > done} == {("v2", "0.1.0+v2")}
    assertNobody(app, c.process.pid)
    checked = 0
    for pid in childrenOf(c.process.pid):
        try:
            assertNobody(app, pid)
        except FileNotFoundError:
            continue  # an old worker that finished draining meanwhile
        checked += 1
    assert checked >= 2, "the new workers were not checked"
    assert pidfile.read_text() == f"{c.process.pid}\n"


def test_ssl_listen_is_carried(cluster, releases: Releases, tmp_path: Path) -> None:
    """
    An ssl: listen (the master holds its TCP socket; the workers run TLS):
    the same port after the upgrade, and TLS clients served by the new code.
    """
    key, certificate = selfSignedCertificate(tmp_path)
    c = releases.start(
        cluster,
        "--workers",
        "2",
        "--listen",
        f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={certificate}",
    )
    c.waitReady(2)
    address = c.address()
    context = ssl.create_default_context(cafile=certificate)

    def overTLS() -> str:
        with context.wrap_socket(
            socket.create_connection(address, timeout=20), server_hostname="127.0.0.1"
        ) as tls:
            tls.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            received = b""
            while chunk := tls.recv(4096):
                received += chunk
            return received.decode()

    assert "release=v1 " in overTLS()
    before = boundAddresses(c)
    releases.switch("v2")
    outcome = upgrade(c)
    assert outcome["upgradeResult"] == "done", c.output
    assert "release=v2 twistcluster=0.1.0+v2 " in overTLS()
    assert boundAddresses(c)[-1:] == before[-1:] and c.address() == address


def test_udp_listen_is_carried(cluster, releases: Releases) -> None:
    """
    A udp: listen: the same port after the upgrade, answered by the new code.
    """
    c = releases.start(
        cluster, "--workers", "2", "--listen", "udp:0:interface=127.0.0.1", app="app.Datagrams"
    )
    c.waitReady(2)
    address = c.address()

    def ask() -> str:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.settimeout(20)
            client.sendto(b"?", address)
            return client.recv(512).decode()

    assert ask().startswith("release=v1 ")
    releases.switch("v2")
    outcome = upgrade(c)
    assert outcome["upgradeResult"] == "done", c.output
    assert ask() == "release=v2 twistcluster=0.1.0+v2"
    assert c.address() == address
