import os
import uuid

import pytest

from tests._cluster import Cluster, killMarked, processesWithMarker, waitUntil
from tests._primary import makePrimary, primary  # noqa: F401 (fixtures)

#: Every process a test starts inherits this session's marker, so that
#: whatever a test leaves behind is found (and killed) at the end.
SESSION = "TWISTCLUSTER_TEST_SESSION"
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


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """
    No test may leave a process behind: any still alive a few seconds after
    the last test is killed (with its process group), and fails the run.
    """
    marker = os.environ[SESSION]
    try:
        waitUntil(lambda: not processesWithMarker(marker, SESSION), 5, "the tests' processes to end", 0.1)
    except AssertionError:
        pass
    left = killMarked(marker, variable=SESSION)
    if left:
        described = []
        for pid in left:
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    command = f.read().replace(b"\0", b" ").decode(errors="replace")
                described.append(f"{pid}: {command}")
            except OSError:
                described.append(str(pid))
        print("\nprocesses left behind by the tests (killed):\n  " + "\n  ".join(described))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
