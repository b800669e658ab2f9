"""
The master/worker wall in a real worker: whatever it runs, a worker loads
nothing of the master, the command line or the API's primary (the import
contract in pyproject.toml checks the code; this checks a running process).
"""

from __future__ import annotations

import json
import signal
import sys

from tests._cluster import PROJECT, connect, readLine

FORBIDDEN = (
    "twistcluster._master",
    "twistcluster._cli",
    "twistcluster._api.primary",
    "twistcluster._api.settings",
)


def _askModules(address: tuple[str, int]) -> dict:
    with connect(address) as sock:
        return json.loads(readLine(sock))


def _forbidden(modules: list[str]) -> list[str]:
    return [m for m in modules if m.startswith(FORBIDDEN)]


def test_a_command_line_worker_loads_nothing_of_the_master(cluster):
    """
    `twist cluster FACTORY`: the worker's entry point hands its runtime to
    the cluster API (cluster.worker is this worker), and neither loads a
    master-side module.
    """
    c = cluster("--workers", "1", "--listen", "tcp:0:interface=127.0.0.1", "tests.wallapp.Modules")
    (workerId,) = c.waitReady(1)
    answer = _askModules(c.address())
    assert answer["worker"] == workerId
    assert "twistcluster._worker.runtime" in answer["modules"]
    assert "twistcluster._api.thisworker" in answer["modules"]
    assert _forbidden(answer["modules"]) == []
    c.signal(signal.SIGTERM)
    assert c.wait() == 0


def test_a_scripts_worker_loads_nothing_of_the_primary(cluster):
    """
    A script using cluster (the same script is the primary and its
    workers): the worker's cluster object connects itself and loads nothing
    of the primary's engine.
    """
    app = cluster(command=[sys.executable, str(PROJECT / "tests" / "wallapp.py")], cwd=PROJECT)
    (match,) = app.waitFor(r"listening on (\d+)$")
    answer = _askModules(("127.0.0.1", int(match.group(1))))
    assert answer["worker"] == 1
    assert "twistcluster._api.thisworker" in answer["modules"]
    assert _forbidden(answer["modules"]) == []
    app.signal(signal.SIGTERM)
    assert app.wait() == 0
