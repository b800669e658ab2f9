"""
Bad input: a one-line error naming the culprit, a non-zero exit, and nothing
left behind (no process, no socket file).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import uuid

import pytest

from tests._cluster import MARKER, PROJECT, TWIST, processesWithMarker, runToEnd


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    marker = uuid.uuid4().hex
    result = runToEnd(
        [TWIST, "--log-format", "text", "cluster", *args],
        60,
        cwd=PROJECT,
        env=dict(os.environ, **{MARKER: marker}, **(env or {})),
    )
    assert processesWithMarker(marker) == []
    return result


@pytest.mark.parametrize(
    "args, culprit",
    [
        (["nosuch.Factory"], "'nosuch.Factory'"),
        (["tests.clusterapps.notAFactory"], "'tests.clusterapps.notAFactory' is not a protocol factory"),
        (
            ["tests.clusterapps.brokenCallable"],
            "tests.clusterapps.brokenCallable() failed: RuntimeError: no factory today",
        ),
        (["notdotted"], "'notdotted' is not a dotted name"),
        (
            ["--listen", "bogus:1", "tests.clusterapps.whoAmI"],
            "--listen 'bogus:1': Unknown endpoint type: 'bogus'",
        ),
        (["--listen", "tcp:http", "tests.clusterapps.whoAmI"], "--listen 'tcp:http'"),
        (["--workers", "0", "tests.clusterapps.whoAmI"], "--workers must be at least 1, not 0"),
        (["--workers", "many", "tests.clusterapps.whoAmI"], "--workers takes a number, not 'many'"),
        (["--shutdown-timeout", "-1", "tests.clusterapps.whoAmI"], "--shutdown-timeout must be at least 0"),
        (
            ["--max-memory", "lots", "tests.clusterapps.whoAmI"],
            "--max-memory takes a size such as 512M or 2G, not 'lots'",
        ),
        (
            ["--max-connections", "0", "tests.clusterapps.whoAmI"],
            "--max-connections must be at least 1, not 0",
        ),
        ([], "give exactly one FACTORY"),
        (
            ["--scheduling", "random", "tests.clusterapps.whoAmI"],
            "--scheduling 'random' is not a scheduling policy (choose from rr, least-conn, none, reuseport)",
        ),
        (
            ["--listen", "udp:0", "--listen", "tcp:0", "tests.clusterapps.WhoAmIDatagram"],
            "--listen 'udp:0': udp cannot be mixed with stream endpoints such as 'tcp:0'",
        ),
        (
            ["--listen", "udp:0", "--listen", "tcp:0", "tests.clusterapps.whoAmI"],
            "--listen 'udp:0': udp cannot be mixed with stream endpoints such as 'tcp:0'",
        ),
        (
            ["--listen", "tcp:0", "--listen", "udp:0", "tests.clusterapps.whoAmI"],
            "--listen 'udp:0': udp cannot be mixed with stream endpoints such as 'tcp:0'",
        ),
        (
            ["--listen", "tcp:70000", "tests.clusterapps.whoAmI"],
            "--listen 'tcp:70000': port 70000 is out of range",
        ),
        (["--listen", "tcp:-5", "tests.clusterapps.whoAmI"], "--listen 'tcp:-5': port -5 is out of range"),
        (
            ["--listen", "tcp6:65536", "tests.clusterapps.whoAmI"],
            "--listen 'tcp6:65536': port 65536 is out of range",
        ),
        (
            ["--listen", "udp:70000", "tests.clusterapps.WhoAmIDatagram"],
            "--listen 'udp:70000': port 70000 is out of range",
        ),
        (
            ["--listen", "udp:0", "tests.clusterapps.whoAmI"],
            "'tests.clusterapps.whoAmI' is not a DatagramProtocol",
        ),
        (
            ["--listen", "udp:nope", "tests.clusterapps.WhoAmIDatagram"],
            "--listen 'udp:nope': port and maxPacketSize are numbers",
        ),
        (
            ["--listen", "systemd:domain=INET:index=0", "tests.clusterapps.whoAmI"],
            "--listen 'systemd:domain=INET:index=0': no such inherited socket",
        ),
        (["--", "nosuchplugin", "--x"], "no twist plugin is called 'nosuchplugin' (installed: "),
        (["--", "web", "--bogus"], "web: option --bogus not recognized"),
        (["--listen", "tcp:0", "--", "web"], "--listen is for a FACTORY; give web its own listen options"),
        (["--", "web", "--listen", "bogus:1"], "web: listen 'bogus:1': Unknown endpoint type: 'bogus'"),
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
        result = run(
            "--listen",
            f"unix:{path}",
            "--listen",
            f"tcp:{port}:interface=127.0.0.1",
            "tests.clusterapps.whoAmI",
        )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"twist cluster: error: cannot listen on 'tcp:{port}:interface=127.0.0.1': Address already in use"
    ]
    assert not path.exists()


def test_a_plugin_whose_own_bind_fails_ends_the_master():
    """
    `twist cluster -- dns` with its TCP port taken and its UDP one free:
    each worker's own bind fails, so none is ever ready (its UDP listen does
    not make it so); after a bounded number of tries the master exits 1
    with the worker's own error on one line, and no worker says the master
    went away (issue 20, 3: each worker was ready, exited 3 and was
    replaced without end; issue 13, 10).
    """
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    with holder:
        result = run("--workers", "2", "--", "dns", "--port", str(port), "--interface", "127.0.0.1")
    assert result.returncode == 1, result.stdout
    (line,) = result.stderr.splitlines()
    assert re.fullmatch(
        r"twist cluster: error: workers keep failing to boot \(5 in a row, none ever ready\); the last one "
        rf"said: worker \d+ could not start: CannotListenError: Couldn't listen on 127\.0\.0\.1:{port}: "
        r"\[Errno 98\] Address already in use\.",
        line,
    ), line
    spawned = set(re.findall(r"worker (\d+) \(pid \d+\) exited with", result.stdout))
    assert 5 <= len(spawned) <= 7, result.stdout
    assert not re.search(r"worker \d+ \(pid \d+\) ready", result.stdout), result.stdout
    assert "the master went away" not in result.stdout


def test_a_factory_that_fails_to_import_in_the_workers_ends_the_master():
    """
    A FACTORY module that imports in the master but not in its workers: the
    master gives up after a bounded number of workers with the import error
    on one line, and no worker says the master went away (issue 13, 10: it
    did, after its import failed).
    """
    result = run(
        "--workers", "2", "--listen", "tcp:0:interface=127.0.0.1", "tests.brokenimport.BrokenFactory"
    )
    assert result.returncode == 1, result.stdout
    assert "went away" not in result.stdout, result.stdout
    (line,) = result.stderr.splitlines()
    assert re.fullmatch(
        r"twist cluster: error: workers keep failing to boot \(5 in a row, none ever ready\); the last one "
        r"said: worker \d+ could not start: BadFactory: cannot import 'tests\.brokenimport\.BrokenFactory': "
        r"ImportError: deliberately broken in the workers",
        line,
    ), line
    assert not re.search(r"worker \d+ \(pid \d+\) ready", result.stdout), result.stdout


def test_bad_policy_in_the_environment():
    result = run("tests.clusterapps.whoAmI", env={"TWISTCLUSTER_SCHED_POLICY": "fastest"})
    assert result.returncode == 64
    assert result.stderr.splitlines() == [
        "twist cluster: error: $TWISTCLUSTER_SCHED_POLICY 'fastest' is not a scheduling policy"
        " (choose from rr, least-conn, none, reuseport)"
    ]


@pytest.mark.parametrize("policy", ["rr", "none"])
def test_unix_path_taken(tmp_path, policy):
    """
    A UNIX socket path that is not a socket, or a live one, is left alone,
    and the master says so.  (A stale one is replaced: tests.test_policies.)
    """
    regular, live = tmp_path / "file.sock", tmp_path / "live.sock"
    regular.write_text("precious")
    holder = socket.socket(socket.AF_UNIX)
    holder.bind(str(live))
    holder.listen()
    with holder:
        for path, reason in [
            (regular, "the path exists and is not a socket"),
            (live, "Address already in use"),
        ]:
            result = run("--scheduling", policy, "--listen", f"unix:{path}", "tests.clusterapps.whoAmI")
            assert result.returncode == 1
            assert result.stderr.splitlines() == [
                f"twist cluster: error: cannot listen on 'unix:{path}': {reason}"
            ]
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(str(live))
    assert regular.read_text() == "precious"
