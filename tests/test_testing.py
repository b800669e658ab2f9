"""
twistcluster.testing, as users use it: the examples' trial and pytest tests
run under their own runners, and a test that fails still leaves no cluster
process behind.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import uuid

from twisted.logger import LogLevel, eventAsJSON

from tests._cluster import MARKER, PROJECT, killMarked, processesWithMarker, runToEnd, waitUntil
from twistcluster.testing import RunningCluster

SAMPLES = PROJECT / "tests" / "samples"


def run(command: list[str], cwd) -> tuple[subprocess.CompletedProcess, str]:
    marker = uuid.uuid4().hex
    env = dict(os.environ, PROJECT=str(PROJECT), **{MARKER: marker})
    result = runToEnd(command, 180, cwd=cwd, env=env)
    return result, marker


def test_trial_example(tmp_path):
    """
    examples/test_echo_trial.py passes under trial's own runner.
    """
    result, marker = run(
        [sys.executable, "-m", "twisted.trial", str(PROJECT / "examples" / "test_echo_trial.py")], tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASSED (successes=1)" in result.stdout
    assert processesWithMarker(marker) == []


def test_trial_helper_cleans_up_a_failed_test(tmp_path):
    result, marker = run([sys.executable, "-m", "twisted.trial", str(SAMPLES / "failing_trial.py")], tmp_path)
    assert result.returncode == 1
    assert "FAILED (failures=1)" in result.stdout, result.stdout + result.stderr
    assert re.search(r"pids \d+ \d+ \d+", result.stdout)
    assert processesWithMarker(marker) == []


def test_pytest_fixture_cleans_up_a_failed_test(tmp_path):
    result, marker = run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-s",
            "-p",
            "no:cacheprovider",
            str(SAMPLES / "failing_pytest.py"),
        ],
        tmp_path,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "AssertionError: on purpose" in result.stdout
    assert re.search(r"pids \d+ \d+ \d+", result.stdout)
    assert processesWithMarker(marker) == []


def test_running_cluster_reads_the_masters_events():
    """
    Where the cluster listens and which workers are ready come from the
    fields of the master's JSON log events (C{clusterEvent}), whatever their
    wording; a text line saying the same is not read.
    """
    running = RunningCluster(123)
    events = [
        {
            "log_format": "bound {description}, reworded",
            "description": "tcp:0:interface=127.0.0.1",
            "address": "tcp:127.0.0.1:4321",
            "sockname": {"address": "127.0.0.1", "port": 4321, "addressType": 4},
            "clusterEvent": "bound",
        },
        {"log_format": "worker {workerId} is up", "workerId": 1, "pid": 77, "clusterEvent": "ready"},
        {"log_format": "worker {workerId} (pid {pid}) ready", "workerId": 2, "pid": 78},
    ]
    for event in events:
        running.lineReceived("\x1e" + eventAsJSON(dict(event, log_level=LogLevel.info, log_namespace="test")))
    running.lineReceived("2026-01-01T00:00:00+0000 [twistcluster#info] worker 3 (pid 79) ready")
    assert running.address == ("127.0.0.1", 4321)
    assert running.pids == {1: 77}
    assert running.ready(1) and not running.ready(2)
    assert running.lines[1] == "[test#info] worker 1 is up"


def test_running_cluster_text_keeps_format_specs():
    """
    The text of an event keeps its format spec (Twisted's flattened copy
    drops it), and an event whose field could not be written as JSON is
    still rendered from the flattened copy.
    """
    running = RunningCluster(123)
    spec = {"log_format": "next in {delay:.1f}s", "delay": 0.26871}
    opaque = {"log_format": "got {thing!r}", "thing": object()}
    for event in (spec, opaque):
        running.lineReceived("\x1e" + eventAsJSON(dict(event, log_level=LogLevel.info, log_namespace="test")))
    assert running.lines[0] == "[test#info] next in 0.3s"
    assert running.lines[1].startswith("[test#info] got <object object at ")


HOLDER = """
import time
from tests._cluster import Cluster
c = Cluster("--workers", "2", "--listen", "tcp:0:interface=127.0.0.1", "tests.clusterapps.WhoAmIFactory")
c.waitReady(2, timeout=60)
print(c.marker, flush=True)
time.sleep(600)
"""


def test_a_killed_test_process_leaves_no_cluster(tmp_path):
    """
    A test process killed outright (SIGKILL: no teardown runs) takes the
    harness's cluster with it: the master dies with its parent, and its
    workers with their control channel.
    """
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER], cwd=PROJECT, stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    marker = None
    try:
        marker = holder.stdout.readline().strip()
        assert marker, "the cluster did not start"
        assert len(processesWithMarker(marker)) >= 3
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait(10)
        waitUntil(lambda: not processesWithMarker(marker), 30, "the master and workers to die")
    finally:
        if holder.poll() is None:
            os.killpg(holder.pid, signal.SIGKILL)
            holder.wait()
        holder.stdout.close()
        if marker:
            killMarked(marker)
