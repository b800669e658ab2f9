"""
Ports of Node's cluster tests about messages and the primary's settings
(node-cluster.md §3 #29, #36, and test-cluster-setup-primary, -fork-env,
-cwd): a PrimaryCluster in this process, real workers running
tests/nodeworker.py.
"""

from __future__ import annotations

import os
import sys

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred

from tests._primary import TIMEOUT, WORKER
from twistcluster import BadSetting


@pytest_twisted.inlineCallbacks
def test_messages_both_ways(primary):
    """
    Node: test-cluster-message, test-cluster-worker-events.  A worker's
    message reaches the worker object and the cluster ('message' with the
    worker); the primary's reaches the worker on both cluster.worker and its
    process; send() answers True, and calls back once delivered.
    """
    primary.setupPrimary(args=["messages"])
    worker = primary.fork()
    onWorker = []
    worker.on("message", onWorker.append)
    hello = yield primary.recorder.message(worker, "hello")
    assert hello == {"event": "hello", "sent": True}
    viaProcess = yield primary.recorder.message(worker, "viaProcess")
    # (viaProcess was sent first: while the hello message was being made.)
    assert onWorker[:2] == [viaProcess, hello]
    delivered: Deferred[object] = Deferred()
    assert worker.send({"n": 1, "text": "ünïcode"}, delivered.callback) is True
    assert (yield delivered.addTimeout(TIMEOUT, primary._reactor)) is None
    echo = yield primary.recorder.wait("message", lambda w, m: "echo" in m)
    assert echo == (worker, {"echo": {"n": 1, "text": "ünïcode"}, "onProcess": True})
    with pytest.raises(TypeError):
        worker.send({"not": object()})


@pytest_twisted.inlineCallbacks
def test_large_payload(primary):
    """
    Node: test-cluster-send-handle-large-payload (the payload part: no
    handles travel in user messages).  An 800 KB message goes to the worker
    and back, equal: AMP's 64 KiB value limit does not show.
    """
    primary.setupPrimary(args=["messages"])
    worker = primary.fork()
    yield worker.whenOnline().addTimeout(TIMEOUT, primary._reactor)
    payload = {"payload": "x" * 800_000, "list": list(range(1000))}
    assert primary.broadcast(payload) == 1
    _, echo = yield primary.recorder.wait("message", lambda w, m: "echo" in m)
    assert echo["echo"] == payload


@pytest_twisted.inlineCallbacks
def test_setup_primary_fork_env_cwd(primary, tmp_path):
    """
    Node: test-cluster-setup-primary, -setup-primary-cumulative,
    -setup-primary-emit, test-cluster-fork-env, test-cluster-cwd.  Settings
    merge over the current ones and each call emits 'setup'; a worker runs
    settings['exec'] with settings['args'], in settings['cwd'], with
    settings['env'] and fork()'s env over the primary's environment, as its
    own user; its id is in TWISTCLUSTER_WORKER_ID.
    """
    assert primary.settings == {}
    primary.setupPrimary(args=["describe"], env={"NODEPORT_SETUP": "setup"})
    primary.setupPrimary(cwd=str(tmp_path), uid=os.getuid())
    settings = dict(primary.settings)
    assert settings["exec"] == WORKER
    assert settings["args"] == ["describe"]
    assert settings["env"] == {"NODEPORT_SETUP": "setup"}
    assert settings["cwd"] == str(tmp_path)
    with pytest.raises(TypeError):
        primary.settings["args"] = []  # type: ignore[index]
    worker = primary.fork({"NODEPORT_FORK": 42})
    described = yield primary.recorder.message(worker, "describe")
    assert described["argv"] == [WORKER, "describe"]
    assert described["cwd"] == str(tmp_path)
    assert described["uid"] == os.getuid()
    assert described["env"] == {"NODEPORT_SETUP": "setup", "NODEPORT_FORK": "42"}
    assert described["workerId"] == worker.id == 1
    # Node deletes NODE_UNIQUE_ID once the worker runs; twistcluster's
    # contract keeps TWISTCLUSTER_WORKER_ID for the application to read.
    assert described["variable"] == "1"
    setups = [args[0] for name, args in primary.recorder.events if name == "setup"]
    assert len(setups) == 3  # two setupPrimary() calls and the fork's own
    assert setups[1]["cwd"] == str(tmp_path) and setups[1]["args"] == ["describe"]


def test_bad_settings(primary, tmp_path):
    """
    Settings that cannot work fail at once, naming the culprit, and start
    nothing.
    """
    with pytest.raises(BadSetting, match="no setting is called 'exce'"):
        primary.setupPrimary(exce="x.py")
    with pytest.raises(BadSetting, match="setting 'args' cannot be 'describe'"):
        primary.setupPrimary(args="describe")
    primary.setupPrimary(exec=str(tmp_path / "missing.py"))
    with pytest.raises(BadSetting, match="setting 'exec' is not a file: '.*missing.py'"):
        primary.fork()
    primary.setupPrimary(exec=WORKER, cwd=str(tmp_path / "nowhere"))
    with pytest.raises(BadSetting, match="setting 'cwd' is not a directory"):
        primary.fork()
    assert primary.workers == {}
    with pytest.raises(BadSetting, match="frozen"):
        primary.schedulingPolicy = primary.SCHED_NONE


def test_interactive_primary_has_no_script(makePrimary):
    """
    A primary with no script (python -c) must be told what its workers run.
    """
    from twistcluster import PrimaryCluster

    primary = PrimaryCluster(argv=["-c"])
    with pytest.raises(BadSetting, match=r"call cluster.setupPrimary\(exec='worker.py'\)"):
        primary.fork()
    assert sys.argv  # untouched
