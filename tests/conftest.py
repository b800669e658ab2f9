import fcntl
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._cluster import Cluster, killMarked, processesWithMarker, waitUntil
from tests._primary import makePrimary, primary  # noqa: F401 (fixtures)

#: Every process a test starts inherits this run's marker, so that whatever
#: a test leaves behind is found (and killed) at the end.  Under
#: pytest-xdist the controller sets it, and every worker inherits it.
SESSION = "TWISTCLUSTER_TEST_SESSION"
#: An xdist worker's own marker, checked when that worker finishes (the
#: run's marker is on the other workers' processes too, still running).
WORKER_SESSION = "TWISTCLUSTER_TEST_WORKER_SESSION"
#: Set in xdist's workers (gw0, gw1, ...).
XDIST_WORKER = "PYTEST_XDIST_WORKER"

if XDIST_WORKER in os.environ:
    os.environ.setdefault(SESSION, uuid.uuid4().hex)
    os.environ[WORKER_SESSION] = uuid.uuid4().hex
else:
    os.environ[SESSION] = uuid.uuid4().hex


@pytest.fixture
def cluster():
    """
    Start a `twist cluster` master with the given arguments; every one
    started is killed at teardown, with its workers, whatever happened.
    """
    started: list[Cluster] = []

    def start(*args: str, **kwargs) -> Cluster:
        c = Cluster(*args, **kwargs)
        started.append(c)
        return c

    yield start
    for c in started:
        c.close()
        # Shown by pytest only when the test failed.
        print(f"--- twist cluster {' '.join(c.args)}\n{c.output}")


# Tests marked serial run alone, when several run at once (pytest-xdist).


def _runDirectory(config: pytest.Config) -> Path:
    """
    A directory the run's xdist workers share, and no other run: the
    controller's base temporary directory (each worker's is in it).
    """
    basetemp = config._tmp_path_factory.getbasetemp()  # type: ignore[attr-defined]
    return basetemp.parent if XDIST_WORKER in os.environ else basetemp


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """
    Under pytest-xdist, a readers-writer lock between the workers: a test
    marked C{serial} waits until the tests running in other workers end
    (setup to teardown), and none starts until it ends; the others run
    side by side.  A gate in front keeps a waiting serial test from
    starving: once it asks, no test starts before it.
    """
    if XDIST_WORKER not in os.environ:
        yield
        return
    directory = _runDirectory(item.config)
    serial = item.get_closest_marker("serial") is not None
    with open(directory / "serial.gate", "a") as gate, open(directory / "serial.lock", "a") as lock:
        fcntl.flock(gate, fcntl.LOCK_EX if serial else fcntl.LOCK_SH)
        fcntl.flock(lock, fcntl.LOCK_EX if serial else fcntl.LOCK_SH)
        if not serial:
            fcntl.flock(gate, fcntl.LOCK_UN)
        yield


def _processesLeft(variable: str) -> list[str]:
    """
    Kill every process still carrying this run's (or this xdist worker's)
    marker in C{variable}, a few seconds after the last test; describe them.
    """
    marker = os.environ[variable]
    try:
        waitUntil(lambda: not processesWithMarker(marker, variable), 5, "the tests' processes to end", 0.1)
    except AssertionError:
        pass
    described = []
    for pid in processesWithMarker(marker, variable):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                command = f.read().replace(b"\0", b" ").decode(errors="replace")
            described.append(f"{pid}: {command}")
        except OSError:
            described.append(str(pid))
    killMarked(marker, variable=variable)
    return described


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """
    No test may leave a process behind: any still alive a few seconds after
    the last test is killed (with its process group), and fails the run.
    An xdist worker kills its own and writes them down for the controller,
    which (after its workers have exited: trylast) looks for the whole
    run's, and reports them all.
    """
    directory = _runDirectory(session.config)
    if XDIST_WORKER in os.environ:
        left = _processesLeft(WORKER_SESSION)
        if left:
            (directory / f"left-behind-{os.environ[XDIST_WORKER]}.txt").write_text("\n".join(left))
        return
    left = _processesLeft(SESSION)
    for report in sorted(directory.glob("left-behind-*.txt")):
        left.extend(report.read_text().splitlines())
    if left:
        print("\nprocesses left behind by the tests (killed):\n  " + "\n  ".join(left))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
