"""
Bad input: a one-line error naming the culprit, a non-zero exit, and nothing
left behind (no process, no socket file).
"""

from __future__ import annotations

import os
import socket
import subprocess
import uuid

import pytest

from tests._cluster import MARKER, PROJECT, TWIST, processesWithMarker


def run(*args: str) -> subprocess.CompletedProcess:
    marker = uuid.uuid4().hex
    result = subprocess.run(
        [TWIST, "--log-format", "text", "cluster", *args],
        cwd=PROJECT,
        env=dict(os.environ, **{MARKER: marker}),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert processesWithMarker(marker) == []
    return result


@pytest.mark.parametrize(
    "args, culprit",
    [
        (["nosuch.Factory"], "'nosuch.Factory'"),
        (["tests.clusterapps.notAFactory"], "'tests.clusterapps.notAFactory' is not a protocol factory"),
        (["tests.clusterapps.brokenCallable"], "tests.clusterapps.brokenCallable() failed: RuntimeError: no factory today"),
        (["notdotted"], "'notdotted' is not a dotted name"),
        (["--listen", "bogus:1", "tests.clusterapps.whoAmI"], "--listen 'bogus:1': Unknown endpoint type: 'bogus'"),
        (["--listen", "tcp:http", "tests.clusterapps.whoAmI"], "--listen 'tcp:http'"),
        (["--workers", "0", "tests.clusterapps.whoAmI"], "--workers must be at least 1, not 0"),
        (["--workers", "many", "tests.clusterapps.whoAmI"], "--workers takes a number, not 'many'"),
        (["--shutdown-timeout", "-1", "tests.clusterapps.whoAmI"], "--shutdown-timeout must be at least 0"),
        (["--max-memory", "lots", "tests.clusterapps.whoAmI"], "--max-memory takes a size such as 512M or 2G, not 'lots'"),
        (["--max-connections", "0", "tests.clusterapps.whoAmI"], "--max-connections must be at least 1, not 0"),
        ([], "give exactly one FACTORY"),
    ],
)
def test_bad_command_line(args, culprit):
    result = run(*args)
    assert result.returncode == 64
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("twist cluster: error: ")
    assert culprit in lines[0]


def test_address_in_use(tmp_path):
    """
    An address in use fails the start before any worker runs, and the
    endpoints bound before it are closed again (the UNIX socket file is gone).
    """
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    path = tmp_path / "app.sock"
    with holder:
        result = run("--listen", f"unix:{path}", "--listen", f"tcp:{port}:interface=127.0.0.1",
                     "tests.clusterapps.whoAmI")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"twist cluster: error: cannot listen on 'tcp:{port}:interface=127.0.0.1': Address already in use"
    ]
    assert not path.exists()
