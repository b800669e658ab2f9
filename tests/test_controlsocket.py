"""
Where control sockets live, and the order in which a master's operator
services start and stop around it (without processes).
"""

from __future__ import annotations

import os
import stat
import tempfile

import pytest
from twisted.application.service import Service
from twisted.internet.defer import Deferred

from twistcluster._common.controlpaths import defaultControlPath, runtimeDirectory, searchedDirectories
from twistcluster._master.binding import StartupError
from twistcluster._master.cockpit import OperatedMaster
from twistcluster._master.controlsocket import ControlSocketError, prepareDefaultDirectory


def test_runtime_directory():
    assert runtimeDirectory({"XDG_RUNTIME_DIR": "/run/user/1000"}, uid=1000) == "/run/user/1000"
    assert runtimeDirectory({}, uid=0) == "/run"
    assert runtimeDirectory({}, uid=1000) == os.path.join(tempfile.gettempdir(), "twistcluster-1000")
    assert defaultControlPath(42, {"XDG_RUNTIME_DIR": "/x"}) == "/x/twistcluster/42.sock"
    assert searchedDirectories({"XDG_RUNTIME_DIR": "/x"}, uid=5) == [
        "/x/twistcluster",
        "/run/twistcluster",
        os.path.join(tempfile.gettempdir(), "twistcluster-5", "twistcluster"),
    ]


def test_default_directory_is_private(tmp_path):
    directory = prepareDefaultDirectory({"XDG_RUNTIME_DIR": str(tmp_path)})
    assert directory == str(tmp_path / "twistcluster")
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    # Made once, used again.
    assert prepareDefaultDirectory({"XDG_RUNTIME_DIR": str(tmp_path)}) == directory


def test_a_per_user_directory_open_to_others_is_refused(tmp_path, monkeypatch):
    """
    Someone else may have made the per-user directory under the shared
    temporary directory first: one open to others is not used.
    """
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    if os.geteuid() == 0:
        pytest.skip("root's RUNDIR is /run")
    mine = tmp_path / f"twistcluster-{os.geteuid()}"
    mine.mkdir(mode=0o777)
    os.chmod(mine, 0o777)
    with pytest.raises(ControlSocketError, match="not a private directory"):
        prepareDefaultDirectory({})


class Recorded(Service):
    def __init__(self, name: str, record: list[str], failing: bool = False) -> None:
        self.name = name
        self._record = record
        self._failing = failing
        self.stopped: Deferred[None] = Deferred()

    def startService(self) -> None:
        if self._failing:
            raise StartupError(f"{self.name} cannot start")
        super().startService()
        self._record.append(f"start {self.name}")

    def stopService(self) -> Deferred[None]:
        super().stopService()
        self._record.append(f"stop {self.name}")
        return self.stopped

    def abandon(self) -> None:
        self._record.append(f"abandon {self.name}")


def test_operators_start_first_and_stop_last():
    """
    The control socket and metrics server start before the master and stop
    once the master has stopped (its graceful stop may take long).
    """
    record: list[str] = []
    master = Recorded("master", record)
    control, metrics = Recorded("control", record), Recorded("metrics", record)
    operated = OperatedMaster(master, [control, metrics], failed=record.append)
    operated.startService()
    assert record == ["start control", "start metrics", "start master"]
    stopping = operated.stopService()
    assert record[-1] == "stop master"
    master.stopped.callback(None)
    assert record[-1] == "stop metrics"
    metrics.stopped.callback(None)
    control.stopped.callback(None)
    assert record[-1] == "stop control"
    assert stopping.called


def test_an_operator_that_cannot_start_stops_the_start():
    """
    The master never starts; what started before is abandoned (its file
    removed), and the failure handler has the one-line reason.
    """
    record: list[str] = []
    master = Recorded("master", record)
    control, metrics = Recorded("control", record), Recorded("metrics", record, failing=True)
    OperatedMaster(master, [control, metrics], failed=record.append).startService()
    assert record == ["start control", "abandon control", "metrics cannot start"]
