"""
The example systemd units (examples/systemd/): they verify, and the
socket-activated one's command serves under systemd-socket-activate and
keeps its socket across a restart of the command.
"""

from __future__ import annotations

import getpass
import json
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests._cluster import PROJECT, TWIST, listeningSockets, readLine, waitUntil

UNITS = PROJECT / "examples" / "systemd"
APP = "tests.serviceapps.GreetingFactory"


def systemdVersion() -> int | None:
    systemctl = shutil.which("systemctl")
    if systemctl is None:
        return None
    done = subprocess.run([systemctl, "--version"], capture_output=True, text=True, timeout=30)
    match = re.match(r"systemd (\d+)", done.stdout)
    return int(match.group(1)) if match else None


def execStart(unit: str) -> list[str]:
    """
    The unit's command, made to run here: this checkout's twist, the user
    running the tests (naming the user already running changes nothing), 2
    workers and the test application.
    """
    (line,) = [line for line in (UNITS / unit).read_text().splitlines() if line.startswith("ExecStart=")]
    command = shlex.split(line.removeprefix("ExecStart="))
    replace = {
        "/opt/app/venv/bin/twist": TWIST,
        "app": getpass.getuser(),
        "4": "2",
        "app.factory": APP,
    }
    return [replace.get(argument, argument) for argument in command]


def rewritten(unit: str, directory: Path) -> Path:
    """
    A copy of C{unit} whose paths name files that exist here.
    """
    text = (
        (UNITS / unit).read_text().replace("/opt/app/venv/bin/twist", TWIST).replace("/opt/app", str(PROJECT))
    )
    path = directory / unit
    path.write_text(text)
    return path


def verify(*units: Path) -> None:
    done = subprocess.run(
        ["systemd-analyze", "verify", *map(str, units)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=units[0].parent,
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr


needsAnalyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed (Debian's systemd package; .ci/run installs it)",
)


@needsAnalyze
def test_units_verify(tmp_path):
    """
    The Type=notify and socket-activated units verify with their paths
    rewritten to existing files; each says KillMode=mixed and WatchdogSec=,
    and TimeoutStopSec= is above --shutdown-timeout.
    """
    verify(rewritten("twistcluster-app-legacy.service", tmp_path))
    verify(
        rewritten("twistcluster-app-activated.socket", tmp_path),
        rewritten("twistcluster-app-activated.service", tmp_path),
    )
    for unit in (
        "twistcluster-app.service",
        "twistcluster-app-legacy.service",
        "twistcluster-app-activated.service",
    ):
        text = (UNITS / unit).read_text()
        assert "KillMode=mixed" in text and "WatchdogSec=" in text and "--user app" in text
        stop = int(re.search(r"^TimeoutStopSec=(\d+)", text, re.M).group(1))
        shutdown = int(re.search(r"--shutdown-timeout (\d+)", text).group(1))
        assert stop > shutdown


@needsAnalyze
def test_notify_reload_unit_verifies(tmp_path):
    version = systemdVersion()
    if version is None or version < 253:
        pytest.skip(f"Type=notify-reload needs systemd >= 253; this machine has systemd {version}")
    verify(rewritten("twistcluster-app.service", tmp_path))


def greet(port: int, timeout: float = 60.0) -> dict:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        return json.loads(readLine(sock))


@pytest.mark.skipif(
    shutil.which("systemd-socket-activate") is None,
    reason="systemd-socket-activate is not installed (Debian's systemd package; .ci/run installs it)",
)
def test_socket_activated_command_keeps_its_socket_across_a_restart(cluster):
    """
    The socket-activated unit's command under systemd-socket-activate (with
    a stand-in for systemd's restart, which keeps the socket and starts the
    command again): the first connection starts it and is served; after
    TERM, a client that connects while no master runs waits in the socket's
    backlog and is served by the next one, on the very same socket.
    """
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    command = execStart("twistcluster-app-activated.service")
    assert "systemd:domain=INET:name=http" in command
    c = cluster(
        *command,
        command=[
            "systemd-socket-activate",
            *("-l", f"127.0.0.1:{port}", "--fdname=http"),
            *(sys.executable, "-m", "tests._relaunch", "2", "--", *command),
        ],
    )
    waitUntil(lambda: listeningSockets(port=port), 30, "systemd-socket-activate to listen")
    inodes = listeningSockets(port=port)
    first = greet(port)
    (started,) = c.waitFor(r"relaunch: started (\d+)")
    masterA = int(started.group(1))
    workersA = set(c.waitReady(2).values())
    assert first["pid"] in workersA and first["seen"] == []
    c.waitFor(r"listening on systemd:domain=INET:name=http at tcp:127\.0\.0\.1:" + str(port))

    answers: list[dict] = []
    os_kill = __import__("os").kill
    os_kill(masterA, signal.SIGTERM)
    c.waitFor(rf"relaunch: {masterA} ended", timeout=60)
    # No master now: this client waits in the backlog of the socket kept.
    waiting = threading.Thread(target=lambda: answers.append(greet(port)), daemon=True)
    waiting.start()
    starts = c.waitFor(r"relaunch: started (\d+)", count=2, timeout=60)
    masterB = int(starts[1].group(1))
    waiting.join(60)
    assert answers and answers[0]["pid"] not in workersA
    assert greet(port)["pid"] not in workersA
    assert masterB != masterA
    assert listeningSockets(port=port) == inodes
    c.signal(signal.SIGTERM)
    c.waitFor(rf"relaunch: {masterB} ended", timeout=60)
    assert c.wait() == 0
