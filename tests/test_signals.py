"""
Every signal a master or worker may receive: USR1 reopens the log file
(logrotate), a signal that means nothing to the master leaves it serving
under load, and workers ignore the master's signals sent to the whole
group (USR2, the master upgrade, included).
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time

from tests._cluster import connect, readLine, waitUntil
from twistcluster._master.signals import otherSignals, signalName

APP = "tests.serviceapps.GreetingFactory"
LISTEN = "tcp:0:interface=127.0.0.1"


class Load:
    """
    Clients that connect, say a numbered line and read the echo, one after
    another, until stopped (bounded in count and time); every failure kept.
    """

    def __init__(self, address, limit: int = 100000, seconds: float = 120.0) -> None:
        self.address = address
        self.sent: list[int] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._limit, self._seconds = limit, seconds
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        deadline = time.monotonic() + self._seconds
        for n in range(self._limit):
            if self._stop.is_set() or time.monotonic() > deadline:
                return
            try:
                with connect(self.address, timeout=10) as sock:
                    json.loads(readLine(sock))
                    sock.sendall(f"line-{n}\n".encode())
                    if readLine(sock) != f"line-{n}\n":
                        raise AssertionError("no echo")
                self.sent.append(n)
            except Exception as e:
                self.failures.append(f"{n}: {e!r}")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


def test_usr1_and_every_other_signal_keep_the_master_serving(cluster):
    """
    Under load, USR1 and every signal that means nothing to the master
    (whose default action would kill it) are logged, and no client fails;
    the workers that served before still serve.  (USR2, the master upgrade,
    has tests of its own: tests/test_upgrade.py.)
    """
    c = cluster("--workers", "2", "--listen", LISTEN, APP)
    pids = set(c.waitReady(2).values())
    load = Load(c.address())
    try:
        waitUntil(lambda: len(load.sent) >= 20, 30, "the load to start")
        sent = [
            signal.SIGUSR1,
            signal.SIGWINCH,
            signal.SIGURG,
            signal.SIGCONT,
            signal.SIGPIPE,
        ]
        sent += otherSignals()
        for signum in sent:
            served = len(load.sent)
            c.signal(signum)
            waitUntil(
                lambda served=served: len(load.sent) >= served + 3, 30, f"serving after {signalName(signum)}"
            )
            assert c.process.poll() is None, signalName(signum)
    finally:
        load.stop()
    assert load.failures == []
    for signum in otherSignals():
        c.waitFor(re.escape(f"{signalName(signum)} means nothing to the master; ignored"))
    c.waitFor(r"SIGUSR1: passed on to 2 workers")
    c.waitFor(r"worker \d+: SIGUSR1: reopened 0 log files", count=2)
    assert {json.loads(readLine(connect(c.address())))["pid"] for _ in range(4)} <= pids
    assert not c.matches(r"exited with signal")
    c.signal(signal.SIGTERM)
    assert c.wait() == 0


def test_workers_ignore_the_masters_signals_sent_to_the_group(cluster):
    """
    kill -SIG -PGID for HUP, USR2, TTIN, TTOU and QUIT's sibling INT: the
    master acts on each, and no worker dies of any.
    """
    c = cluster("--workers", "2", "--listen", LISTEN, APP)
    c.waitReady(2)
    for signum, done in (
        (signal.SIGUSR2, r"upgrade done: every process runs"),
        (signal.SIGTTIN, r"one worker more: 3"),
        (signal.SIGTTOU, r"one worker fewer: 2"),
        (signal.SIGHUP, r"rolling restart done"),
    ):
        os.killpg(c.process.pid, signum)
        c.waitFor(done, timeout=60)
        assert c.process.poll() is None
    assert json.loads(readLine(connect(c.address())))["worker"]
    assert not c.matches(r"exited with signal"), c.output
    os.killpg(c.process.pid, signal.SIGQUIT)
    assert c.wait() == 0
    assert c.matches(r"SIGQUIT: stopping gracefully")
    assert not c.matches(r"exited with signal"), c.output
    assert c.leftovers() == []


def test_usr1_reopens_the_log_file(cluster, tmp_path):
    """
    logrotate's way: rename the log file, send USR1; later lines go to a new
    file of the same name, the workers' included, and no line is lost
    (clients keep logging lines through the rename and the reopen).
    """
    log = tmp_path / "master.log"
    c = cluster(
        "--workers", "2", "--listen", LISTEN, APP, twistArgs=["--log-format", "text", "--log-file", str(log)]
    )
    waitUntil(lambda: log.exists() and len(re.findall(r"\) ready", log.read_text())) >= 2, 30, "ready")
    match = re.search(r"listening on \S+ at tcp:127\.0\.0\.1:(\d+)", log.read_text())
    load = Load(("127.0.0.1", int(match.group(1))))
    try:
        waitUntil(lambda: len(load.sent) >= 10, 30, "some lines before the rename")
        log.rename(tmp_path / "master.log.1")
        waitUntil(lambda: len(load.sent) >= 20, 30, "some lines into the renamed file")
        c.signal(signal.SIGUSR1)
        waitUntil(lambda: log.exists() and "reopened the log file" in log.read_text(), 30, "the new file")
        waitUntil(lambda: "SIGUSR1: reopened 0 log files" in log.read_text(), 30, "workers' lines")
        served = len(load.sent)
        waitUntil(lambda: len(load.sent) >= served + 10, 30, "lines after the reopen")
    finally:
        load.stop()
    assert load.failures == []
    c.signal(signal.SIGTERM)
    assert c.wait() == 0
    old, new = (tmp_path / "master.log.1").read_text(), log.read_text()
    logged = [int(n) for n in re.findall(r"client said line-(\d+)", old + new)]
    assert sorted(logged) == sorted(load.sent)
    assert re.search(r"client said line-\d+", new)
    assert "stopped" in new and "stopped" not in old


def test_usr1_reopens_a_web_sites_access_log(cluster, tmp_path):
    """
    A worker passed USR1 reopens the access log of the twisted.web site it
    serves (twist web --logfile), as logrotate needs.
    """
    import http.client

    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "index.html").write_text("hello\n")
    log = tmp_path / "access.log"
    c = cluster(
        *("--workers", "1", "--", "web", "--listen", LISTEN),
        *("--path", str(tmp_path / "www"), "--logfile", str(log)),
    )
    c.waitReady(1)
    host, port = c.address()

    def get(path: str) -> None:
        connection = http.client.HTTPConnection(host, port, timeout=10)
        connection.request("GET", path)
        assert connection.getresponse().status in (200, 404)
        connection.close()

    get("/before-rename")
    waitUntil(lambda: "/before-rename" in log.read_text(), 10, "the first request logged")
    log.rename(tmp_path / "access.log.1")
    get("/after-rename")
    c.signal(signal.SIGUSR1)
    c.waitFor(r"worker 1: SIGUSR1: reopened 1 log files")
    get("/after-reopen")
    waitUntil(lambda: log.exists() and "/after-reopen" in log.read_text(), 10, "a new access log")
    old = (tmp_path / "access.log.1").read_text()
    assert "/before-rename" in old and "/after-rename" in old and "/after-reopen" not in old
    c.signal(signal.SIGTERM)
    assert c.wait() == 0
