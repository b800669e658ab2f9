"""
What operators see of a running cluster: process titles in ps, top and
/proc/PID/cmdline, and twistcluster's version.
"""

from __future__ import annotations

import signal
import subprocess

import twisted
from tests._cluster import TWIST, waitUntil
from twistcluster import __version__

APP = "tests.serviceapps.GreetingFactory"
LISTEN = "tcp:0:interface=127.0.0.1"


def cmdline(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().rstrip(b"\0").replace(b"\0", b" ").decode()


def test_process_titles(cluster):
    """
    The master's title names what it serves, where, how many workers and the
    policy (kept current when scaling); each worker's, its id and FACTORY.
    """
    c = cluster("--workers", "2", "--scheduling", "least-conn", "--listen", LISTEN, APP)
    pids = c.waitReady(2)
    assert cmdline(c.process.pid) == f"twistcluster master: {APP} {LISTEN} (2 workers, least-conn)"
    for workerId, pid in pids.items():
        assert cmdline(pid) == f"twistcluster worker {workerId}: {APP}"
    c.signal(signal.SIGTTIN)
    new = c.waitReady(3)
    (third,) = set(new) - set(pids)
    assert cmdline(new[third]) == f"twistcluster worker {third}: {APP}"
    waitUntil(lambda: "(3 workers, least-conn)" in cmdline(c.process.pid), 10, "the new title")
    c.signal(signal.SIGTERM)
    assert c.wait() == 0


def test_subcommand_titles(cluster, tmp_path):
    c = cluster("--workers", "1", "--", "web", "--listen", LISTEN, "--path", str(tmp_path))
    pids = c.waitReady(1)
    assert cmdline(c.process.pid) == f"twistcluster master: web {LISTEN} (1 workers, rr)"
    assert cmdline(pids[1]) == "twistcluster worker 1: web"


def test_version():
    """
    twist cluster --version prints twistcluster's own version (single
    sourced: the package's __version__), with Twisted's.
    """
    done = subprocess.run([TWIST, "cluster", "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"twistcluster {__version__} (Twisted {twisted.__version__}, ")
    from importlib.metadata import version

    assert version("twistcluster") == __version__
