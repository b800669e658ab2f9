"""
The control socket and the `twistcluster` command, with real masters,
workers, connections and signals: what `status` reports, what `reload`,
`scale`, `add`, `remove` and `stop` do and answer, who may connect, where
the sockets live, and `top` on a pipe and in a terminal.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests._cluster import PROJECT, connect, dieWithTest, readLine, waitUntil, whoServes

LOCAL = "tcp:0:interface=127.0.0.1"
APP = "tests.clusterapps.WhoAmIFactory"
TWISTCLUSTER = str(Path(sys.executable).parent / "twistcluster")


def ctl(c, *args: str, timeout: float = 60, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """
    Run `twistcluster ARGS` in the environment of cluster C{c} (its RUNDIR).
    """
    environ = dict(c.environ if c is not None else os.environ, **(env or {}))
    return subprocess.run(
        [TWISTCLUSTER, *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def status(c, *args: str) -> dict:
    done = ctl(c, *args, "status", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_status_counts_connections_of_three_workers(cluster):
    """
    After a known number of connections to 3 workers: 3 workers, the pids
    that served, connectionsTotal adding up to the connections made, and
    connectionsOpen counting the ones a client still holds.
    """
    c = cluster("--workers", "3", "--listen", LOCAL, APP)
    ready = c.waitReady(3)
    address = c.address()
    served = [whoServes(address)[1] for _ in range(9)]
    held = [connect(address) for _ in range(2)]
    for sock in held:
        served.append(int(re.search(r"pid=(\d+)", readLine(sock)).group(1)))

    def settled() -> dict | None:
        document = status(c)
        return document if sum(w["connectionsOpen"] for w in document["workers"]) == 2 else None

    try:
        document = waitUntil(settled, 30, "the short connections to end")
    finally:
        for sock in held:
            sock.close()
    workers = document["workers"]
    assert len(workers) == 3
    assert {w["pid"] for w in workers} == set(ready.values())
    assert set(served) <= {w["pid"] for w in workers}
    assert {w["state"] for w in workers} == {"listening"}
    assert sorted(w["slot"] for w in workers) == [0, 1, 2]
    assert sum(w["connectionsTotal"] for w in workers) == 11
    for worker in workers:
        assert worker["connectionsTotal"] == served.count(worker["pid"])
        assert worker["rssBytes"] > 1 << 20
        assert worker["uptime"] >= 0
    master = document["master"]
    assert master["pid"] == c.process.pid
    assert master["policy"] == "rr"
    assert (master["phase"], master["upgrade"]["phase"]) == ("running", "idle")
    assert master["workers"] == 3 and master["ready"] == 3
    [listener] = master["listeners"]
    assert listener["address"] == f"tcp:127.0.0.1:{address[1]}"
    assert listener["accepted"] == 11
    assert master["controlSocket"] == c.controlPath


def test_a_killed_worker_is_replaced_and_told(cluster):
    """
    After kill -9 of a worker, the status shows its replacement in the same
    slot, a crash counted, and events saying what happened.
    """
    c = cluster("--workers", "2", "--listen", LOCAL, APP)
    c.waitReady(2)
    before = {w["slot"]: w for w in status(c)["workers"]}
    victim = before[1]
    os.kill(victim["pid"], signal.SIGKILL)

    def replaced() -> dict | None:
        document = status(c)
        ready = [w for w in document["workers"] if w["state"] == "listening"]
        return document if len(ready) == 2 and victim["pid"] not in {w["pid"] for w in ready} else None

    document = waitUntil(replaced, 30, "the killed worker's replacement")
    new = {w["slot"]: w for w in document["workers"]}[1]
    assert new["id"] > victim["id"] and new["pid"] != victim["pid"]
    assert new["generation"] == victim["generation"] == 0
    assert {w["slot"]: w["pid"] for w in document["workers"]}[0] == before[0]["pid"]
    assert document["master"]["restarts"]["crash"] == 1
    assert sum(document["master"]["restarts"].values()) == 1
    events = [(e["worker"], e["slot"], e["event"]) for e in document["events"]]
    assert (victim["id"], 1, "exit") in events
    assert events.index((victim["id"], 1, "exit")) < events.index((new["id"], 1, "fork"))
    assert (new["id"], 1, "ready") in events
    [exit] = [e for e in document["events"] if e["worker"] == victim["id"] and e["event"] == "exit"]
    assert exit["reason"].startswith("signal 9: crash; replaced in ")


def test_reload_and_scale_answer_when_done(cluster):
    """
    `scale`, `add`, `remove` and `reload` do what TTIN/TTOU and HUP do, and
    answer once done: new workers ready, surplus ones gone, every old
    worker replaced by a ready one.
    """
    c = cluster("--workers", "2", "--listen", LOCAL, APP)
    c.waitReady(2)
    scaled = ctl(c, "scale", "3")
    assert scaled.returncode == 0, scaled.stderr
    assert scaled.stdout == "3 workers, 3 ready\n"
    assert [w["state"] for w in status(c)["workers"]] == ["listening"] * 3

    removed = ctl(c, "remove")
    assert removed.returncode == 0, removed.stderr
    after = status(c)["workers"]
    assert [w["state"] for w in after] == ["listening"] * 2
    assert c.matches(r"worker 3 \(pid \d+\) exited with code 0")

    added = ctl(c, "add")
    assert added.returncode == 0 and added.stdout == "3 workers, 3 ready\n"

    old = {w["id"] for w in status(c)["workers"]}
    reloaded = ctl(c, "reload")
    assert reloaded.returncode == 0, reloaded.stderr
    assert reloaded.stdout == "reload done: 3 of 3 workers replaced\n"
    document = status(c)
    ready = [w for w in document["workers"] if w["state"] == "listening"]
    assert len(ready) == 3 and not old & {w["id"] for w in ready}
    assert sorted(w["slot"] for w in ready) == [0, 1, 2]
    assert {w["generation"] for w in ready} == {1} and document["master"]["generation"] == 1
    assert document["master"]["restarts"]["reload"] == 3
    assert c.process.poll() is None


def test_stop_over_the_socket(cluster):
    """
    `stop` is a graceful stop; the command returns once the master has
    stopped, which exits 0 and removes its socket.
    """
    c = cluster("--workers", "1", "--listen", LOCAL, APP)
    c.waitReady(1)
    assert os.path.exists(c.controlPath)
    done = ctl(c, "stop")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "stopping...\nstopped\n"
    assert c.wait() == 0
    assert not os.path.exists(c.controlPath)
    assert c.leftovers() == []


def test_reopen_logs_over_the_socket(cluster, tmp_path):
    """
    `reopen-logs` does what USR1 does: after logrotate's rename, the master's
    later lines (and the workers', which it passes USR1 on to) go to a new
    file at the old path; the command answers once it is done.
    """
    log = tmp_path / "master.log"
    c = cluster(
        "--workers", "2", "--listen", LOCAL, APP, twistArgs=["--log-format", "text", "--log-file", str(log)]
    )
    waitUntil(lambda: log.exists() and len(re.findall(r"\) ready", log.read_text())) >= 2, 60, "ready")
    log.rename(tmp_path / "master.log.1")
    done = ctl(c, "reopen-logs")
    assert done.returncode == 0, done.stderr
    waitUntil(
        lambda: log.exists() and "SIGUSR1: reopened 0 log files" in log.read_text(), 30, "workers' lines"
    )
    new = log.read_text()
    assert "reopen-logs over the control socket: reopened the log file" in new
    assert "reopen-logs over the control socket: passed on to 2 workers" in new
    assert "reopened the log file" not in (tmp_path / "master.log.1").read_text()
    assert ctl(c, "reopen-logs", "now").returncode != 0


def test_second_master_on_the_same_path_fails(cluster, tmp_path):
    """
    A live socket at an explicit --control path: the second master stops
    with one line and exit status 1, leaving the first one serving; a stale
    file (its master killed) is replaced.
    """
    path = str(tmp_path / "control.sock")
    first = cluster("--workers", "1", "--listen", LOCAL, "--control", path, APP)
    first.waitReady(1)
    second = cluster("--workers", "1", "--listen", LOCAL, "--control", path, APP)
    assert second.wait() == 1
    assert second.lines[-1:] == [f"twist cluster: error: --control {path}: another master is serving on it"]
    assert second.leftovers() == []
    assert ctl(first, "--control", path, "status").returncode == 0

    first.close()
    assert stat.S_ISSOCK(os.lstat(path).st_mode)
    third = cluster("--workers", "1", "--listen", LOCAL, "--control", path, APP)
    third.waitReady(1)
    assert status(third, "--control", path)["master"]["pid"] == third.process.pid


def test_default_sockets_of_two_masters_coexist(cluster, tmp_path):
    """
    Two masters of one user, each with its default socket: a bare command
    lists both (pid and listeners) and asks; --pid picks one.
    """
    environ = {"XDG_RUNTIME_DIR": str(tmp_path)}
    one = cluster("--workers", "1", "--listen", LOCAL, APP, env=environ)
    two = cluster("--workers", "1", "--listen", LOCAL, APP, env=environ)
    one.waitReady(1)
    two.waitReady(1)
    directory = tmp_path / "twistcluster"
    assert sorted(os.listdir(directory)) == sorted(f"{c.process.pid}.sock" for c in (one, two))
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700

    bare = ctl(one, "status")
    assert bare.returncode == 64
    lines = bare.stderr.splitlines()
    assert lines[0] == (
        "twistcluster: error: 2 masters are running; choose one with --pid PID or --control PATH:"
    )
    for c in (one, two):
        port = c.address()[1]
        assert f"  --pid {c.process.pid}  tcp:127.0.0.1:{port}" in lines
    for c in (one, two):
        assert status(c, "--pid", str(c.process.pid))["master"]["pid"] == c.process.pid

    one.signal(signal.SIGTERM)
    assert one.wait() == 0
    assert status(two)["master"]["pid"] == two.process.pid


def _connectAs(uid: int, path: str) -> bytes:
    """
    In a child process running as C{uid}: connect to C{path}, send a
    command, and return what came back before the connection closed.
    """
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            os.close(reader)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(10)
            sock.connect(path)
            sock.sendall(b"status\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
            os.write(writer, data or b"<closed>")
        except BaseException as e:
            os.write(writer, f"<error {e!r}>".encode())
        finally:
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader, "rb") as answer:
        data = answer.read()
    os.waitpid(child, 0)
    return data


def test_socket_mode_and_peer_credentials(cluster):
    """
    The socket is created 0600; opened up to everyone, a client of another
    uid is still refused (SO_PEERCRED), with one JSON line, and the master
    goes on serving its own user.
    """
    # Reachable by another user (pytest's tmp_path is not).
    directory = tempfile.mkdtemp(prefix="twistcluster-peer-")
    os.chmod(directory, 0o755)
    path = os.path.join(directory, "control.sock")
    c = cluster("--workers", "1", "--listen", LOCAL, "--control", path, APP)
    c.waitReady(1)
    mode = os.lstat(path).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    if os.geteuid() != 0:
        pytest.skip("switching to another uid needs root")
    os.chmod(path, 0o666)
    nobody = 65534
    answer = _connectAs(nobody, path)
    assert json.loads(answer) == {
        "ok": False,
        "error": f"permission denied: uid {nobody} may not control this master",
    }
    c.waitFor(rf"control socket: refused pid \d+ of uid {nobody}")
    assert status(c, "--control", path)["master"]["pid"] == c.process.pid
    c.close()
    shutil.rmtree(directory)


def test_command_line_errors(cluster, tmp_path):
    """
    One line on stderr and a documented exit status: no master (69), a bad
    command line (64), a command the master refuses (1).
    """
    environ = {"XDG_RUNTIME_DIR": str(tmp_path)}
    nobody = ctl(None, "status", env=environ)
    assert nobody.returncode == 69
    assert nobody.stderr == (
        f"twistcluster: error: no running master found in {tmp_path}/twistcluster"
        " (give --control PATH or --pid PID)\n"
    )
    missing = ctl(None, "--control", str(tmp_path / "nothing.sock"), "status")
    assert missing.returncode == 69
    assert missing.stderr.count("\n") == 1
    assert ctl(None, "frobnicate").returncode == 64
    assert ctl(None, "scale", "0").returncode == 64

    c = cluster("--workers", "1", "--listen", LOCAL, APP)
    c.waitReady(1)
    refused = ctl(c, "remove")
    assert (refused.returncode, refused.stderr) == (
        1,
        "twistcluster: error: not shrinking below one worker\n",
    )
    version = ctl(c, "--version")
    assert version.returncode == 0 and version.stdout.startswith("twistcluster ")
    module = subprocess.run(
        [sys.executable, "-m", "twistcluster", "status", "--json"],
        env=c.environ,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=PROJECT,
    )
    assert json.loads(module.stdout)["master"]["pid"] == c.process.pid


def test_top_once_on_a_pipe(cluster):
    """
    `top --once` prints one snapshot, tables whole, on a pipe.
    """
    c = cluster("--workers", "2", "--listen", LOCAL, APP)
    pids = c.waitReady(2).values()
    done = ctl(c, "top", "--once")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count(f"master {c.process.pid}") == 1
    for pid in pids:
        assert re.search(rf"\b{pid}\b.*listening", done.stdout)
    assert "\x1b[" not in done.stdout


def test_top_in_a_terminal_refreshes(cluster):
    """
    `top` in a pseudo-terminal draws the status, then redraws it every
    second; SIGINT (Ctrl-C) ends it with status 0.
    """
    c = cluster("--workers", "1", "--listen", LOCAL, APP)
    c.waitReady(1)
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        # dieWithTest gives it SIGINT at its default, however the suite was started.
        dieWithTest([TWISTCLUSTER, "top"]),
        env=dict(c.environ, TERM="xterm-256color", COLUMNS="160", LINES="50"),
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        start_new_session=True,
    )
    os.close(terminal)
    output = b""
    header = f"master {c.process.pid}".encode()
    try:
        deadline = time.monotonic() + 30
        # The first drawing, then two refreshes.
        while output.count(header) < 3:
            assert time.monotonic() < deadline, f"no two refreshes: {output[-2000:]!r}"
            if select.select([controller], [], [], 1)[0]:
                output += os.read(controller, 65536)
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(controller)
    assert b"\x1b[" in output


BREAKABLE = """
import os
from twisted.internet.protocol import Factory
from tests.clusterapps import WhoAmI

class App(Factory):
    protocol = WhoAmI

    def startFactory(self):
        if os.path.exists(os.path.join(os.path.dirname(__file__), "broken")):
            raise RuntimeError("this version does not start")
"""


def test_a_reload_that_keeps_the_old_workers_says_why(cluster, tmp_path):
    """
    `reload` when the new code does not start: the old worker keeps
    serving, and the answer (exit status 1) says so, with the new workers'
    own error.
    """
    (tmp_path / "breakable.py").write_text(BREAKABLE)
    environ = {"PYTHONPATH": f"{tmp_path}{os.pathsep}{PROJECT}"}
    c = cluster("--workers", "1", "--listen", LOCAL, "breakable.App", cwd=tmp_path, env=environ)
    [old] = c.waitReady(1).values()
    (tmp_path / "broken").write_text("")
    reloaded = ctl(c, "reload")
    assert reloaded.returncode == 1
    assert reloaded.stderr.startswith(
        "twistcluster: error: kept 1 of 1 old workers: their replacements failed to boot (the last one: "
    )
    assert "RuntimeError: this version does not start" in reloaded.stderr
    assert reloaded.stderr.count("\n") == 1
    assert whoServes(c.address())[1] == old
